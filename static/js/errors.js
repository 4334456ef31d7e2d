// Exceptions: the message, the stack, and for a syntax error a two-line code frame with a caret.
//
// Where a syntax error is: the payload's `line` and `column` (1-based) when the server sends
// them (API.md §12); else the `(line:column)` at the end of the message, as the acorn parser
// writes it (its column is 0-based: `let = ;` → `Unexpected token (1:6)` points at the `;`);
// else QuickJS's own format (`unexpected token in expression: '*'` with `at <input>:2` in
// the stack), which names the line, and the token, found on that line, gives the column.

import { h } from "./dom.js";

/** `{line, column}` (1-based; column may be null) of a syntax error in `source`, or null. */
export function syntaxPosition(payload, source) {
  const message = payload.message || "";
  if (payload.name !== "SyntaxError" && !message.startsWith("SyntaxError")) return null;
  if (Number.isInteger(payload.line) && payload.line > 0) {
    return { line: payload.line, column: Number.isInteger(payload.column) && payload.column > 0 ? payload.column : null };
  }
  const acorn = /\((\d+):(\d+)\)\s*$/.exec(message);
  if (acorn) return { line: Number(acorn[1]), column: Number(acorn[2]) + 1 };
  const at = /at <input>:(\d+)(?::(\d+))?/.exec(payload.stack || "");
  if (!at) return null;
  const line = Number(at[1]);
  if (at[2]) return { line, column: Number(at[2]) };
  const token = /unexpected token in [^:]*: '(.+)'$/.exec(message);
  const text = (source ?? "").split("\n")[line - 1];
  const index = token && text != null ? text.indexOf(token[1]) : -1;
  return { line, column: index >= 0 ? index + 1 : null };
}

const WIDTH = 100; // longer lines are shown as a window around the column

/** Two lines: the source line (numbered) and a caret under the column. Null when unknown. */
export function codeFrame(source, pos) {
  if (source == null || !pos) return null;
  const lines = source.split("\n");
  let text = lines[pos.line - 1];
  if (text == null) return null;
  let col = pos.column != null ? Math.min(pos.column, text.length + 1) : null;
  if (text.length > WIDTH) {
    const start = Math.max(0, Math.min((col ?? 1) - WIDTH / 2, text.length - WIDTH));
    text = `${start > 0 ? "…" : ""}${text.slice(start, start + WIDTH)}${start + WIDTH < text.length ? "…" : ""}`;
    if (col != null) col = col - start + (start > 0 ? 1 : 0);
  }
  const gutter = String(pos.line);
  // Tabs stay tabs under the caret, so it lines up whatever the tab width.
  const pad = col != null ? text.slice(0, col - 1).replace(/[^\t]/g, " ") : "";
  return h(
    "pre",
    { class: "code-frame", "aria-label": `Line ${pos.line}${col != null ? `, column ${col}` : ""}` },
    h("span", { class: "cf-gutter" }, `${gutter} | `),
    text,
    "\n",
    h("span", { class: "cf-gutter" }, `${" ".repeat(gutter.length)} | `),
    col != null ? h("span", { class: "cf-caret" }, `${pad}^`) : null,
  );
}

/** An exception payload; `source` (the input that ran) adds the code frame of a syntax error. */
export function renderException(payload, { source } = {}) {
  const message = payload.message || payload.name || "Error";
  const stack = payload.stack && payload.stack.trim();
  // Stacks usually start with the message; show it once.
  const rest = stack && stack.startsWith(message) ? stack.slice(message.length).replace(/^\n/, "") : stack;
  return h(
    "div",
    { class: "line exception", role: "group", "aria-label": "Exception" },
    h("div", { class: "exc-message" }, message),
    codeFrame(source, syntaxPosition(payload, source)),
    rest ? h("pre", { class: "exc-stack" }, rest) : null,
  );
}
