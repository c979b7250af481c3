// A few DOM helpers: elements from code (no framework: the bundle stays
// small), and refusals shown as the server's message beside what caused them.

import { describe } from "./api.js";

type Child = Node | string | number | null | undefined | false;
type Attrs = Record<string, string | number | boolean | EventListener | null | undefined>;

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
  ...children: (Child | Child[])[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (typeof v === "function") el.addEventListener(k.replace(/^on/, ""), v);
    else if (k === "class") el.className = String(v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

/** Replaces an element's children. */
export function fill(el: Element, ...children: (Child | Child[])[]) {
  el.replaceChildren();
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
}

/**
 * A place for an action's outcome, next to the action: the server's refusal
 * as it said it (role=alert, read out by screen readers), or a short success.
 */
export class Outcome {
  readonly el = h("p", { class: "outcome", role: "status", "aria-live": "polite" });

  error(what: string, e: unknown) {
    this.el.className = "outcome error";
    this.el.setAttribute("role", "alert");
    this.el.textContent = `${what}: ${describe(e)}`;
  }

  ok(text: string) {
    this.el.className = "outcome ok";
    this.el.setAttribute("role", "status");
    this.el.textContent = text;
  }

  clear() {
    this.el.className = "outcome";
    this.el.textContent = "";
  }
}

/** Runs an action from a button: disabled while it runs, its refusal shown in `out`. */
export async function act<T>(out: Outcome, what: string, run: () => Promise<T>, button?: HTMLButtonElement): Promise<T | undefined> {
  if (button) button.disabled = true;
  try {
    const r = await run();
    out.clear();
    return r;
  } catch (e) {
    out.error(what, e);
    return undefined;
  } finally {
    if (button) button.disabled = false;
  }
}

export function when(ms: bigint | number): string {
  const n = Number(ms);
  return n > 0 ? new Date(n).toLocaleString() : "—";
}
