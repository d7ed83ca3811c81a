// Light/dark theme: the system's preference until the user picks one (kept in localStorage).

export type Theme = "light" | "dark";
const STORAGE = "ai00.theme";

function initial(): Theme {
  const saved = localStorage.getItem(STORAGE);
  if (saved === "light" || saved === "dark") return saved;
  return matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
}

export const theme = $state({ current: initial() });

export function applyTheme(): void {
  document.documentElement.dataset.theme = theme.current;
}

export function toggleTheme(): void {
  theme.current = theme.current === "dark" ? "light" : "dark";
  localStorage.setItem(STORAGE, theme.current);
  applyTheme();
}
