// Chat conversations, kept in the browser's localStorage: messages, role names, which one is open.

import type { ChatMessage, FinishReason, Names } from "../protocol";

export interface Message {
  id: string;
  role: "user" | "assistant" | "system";
  content: string;
  finish?: FinishReason;
  tokPerS?: number;
}

export interface Conversation {
  id: string;
  title: string;
  messages: Message[];
  names: { user: string; assistant: string };
  updated: number;
}

const STORAGE = "ai00.conversations";
const DEFAULT_NAMES = { user: "User", assistant: "Assistant" };

function newId(): string {
  return Math.random().toString(36).slice(2, 10) + Date.now().toString(36).slice(-4);
}

export function blankConversation(): Conversation {
  return { id: newId(), title: "New chat", messages: [], names: { ...DEFAULT_NAMES }, updated: Date.now() };
}

function load(): { list: Conversation[]; current: string } {
  try {
    const saved = JSON.parse(localStorage.getItem(STORAGE) ?? "null");
    if (saved && Array.isArray(saved.list) && saved.list.length) return saved;
  } catch {
    // a corrupt entry: start afresh rather than fail to load the page
  }
  const first = blankConversation();
  return { list: [first], current: first.id };
}

export const chats = $state(load());

export function save(): void {
  localStorage.setItem(STORAGE, JSON.stringify(chats));
}

export function current(): Conversation {
  return chats.list.find((c) => c.id === chats.current) ?? chats.list[0];
}

export function createConversation(): Conversation {
  const c = blankConversation();
  chats.list.unshift(c);
  chats.current = c.id;
  save();
  return c;
}

export function openConversation(id: string): void {
  chats.current = id;
  save();
}

export function deleteConversation(id: string): void {
  chats.list = chats.list.filter((c) => c.id !== id);
  if (chats.list.length === 0) chats.list.push(blankConversation());
  if (!chats.list.some((c) => c.id === chats.current)) chats.current = chats.list[0].id;
  save();
}

export function addMessage(c: Conversation, role: Message["role"], content: string): Message {
  const m: Message = { id: newId(), role, content };
  c.messages.push(m);
  if (c.title === "New chat" && role === "user") c.title = content.trim().split("\n")[0].slice(0, 48) || "New chat";
  c.updated = Date.now();
  save();
  return c.messages[c.messages.length - 1];
}

/** The messages the model sees, up to (not including) index `end`. */
export function history(c: Conversation, end = c.messages.length): ChatMessage[] {
  return c.messages
    .slice(0, end)
    .filter((m) => m.content.trim() !== "")
    .map((m) => ({ role: m.role, content: m.content }));
}

export function namesOf(c: Conversation): Names {
  return {
    user: c.names.user.trim() || DEFAULT_NAMES.user,
    assistant: c.names.assistant.trim() || DEFAULT_NAMES.assistant,
  };
}
