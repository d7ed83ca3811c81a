// Path routing for three pages; the server answers any non-API path with index.html (SPA fallback).

export type Page = "chat" | "continuation" | "paper";
export const PAGES: { page: Page; path: string; label: string }[] = [
  { page: "chat", path: "/chat", label: "Chat" },
  { page: "continuation", path: "/continuation", label: "Continuation" },
  { page: "paper", path: "/paper", label: "Paper" },
];

function pageOf(path: string): Page {
  return PAGES.find((p) => path.startsWith(p.path))?.page ?? "chat";
}

export const route = $state({ page: pageOf(location.pathname) });

addEventListener("popstate", () => (route.page = pageOf(location.pathname)));

export function navigate(page: Page): void {
  const path = PAGES.find((p) => p.page === page)!.path;
  if (location.pathname !== path) history.pushState(null, "", path + location.search);
  route.page = page;
}
