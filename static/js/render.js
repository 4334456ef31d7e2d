// How values and events look: the expandable value tree and one line per event.

import { h } from "./dom.js";

// ------------------------------------------------------------------ value tree

function isContainer(v) {
  return v !== null && typeof v === "object";
}

function jsonLeaf(v) {
  if (v === null) return h("span", { class: "j-null" }, "null");
  switch (typeof v) {
    case "string":
      return h("span", { class: "j-string" }, JSON.stringify(v));
    case "number":
      return h("span", { class: "j-number" }, String(v));
    case "boolean":
      return h("span", { class: "j-boolean" }, String(v));
    default:
      return h("span", {}, String(v));
  }
}

function containerLabel(v) {
  if (Array.isArray(v)) return `Array(${v.length})`;
  const keys = Object.keys(v);
  const shown = keys.slice(0, 5).join(", ");
  return `{${shown}${keys.length > 5 ? ", …" : ""}}`;
}

/** A <details> whose children are built the first time it opens (large values stay cheap). */
function expandable(summaryChildren, value) {
  const details = h("details", { class: "vt-node" }, h("summary", {}, summaryChildren));
  details.addEventListener(
    "toggle",
    () => {
      if (!details.open || details.dataset.built) return;
      details.dataset.built = "1";
      const list = h("ul", { class: "vt-children" });
      const entries = Array.isArray(value) ? value.map((v, i) => [String(i), v]) : Object.entries(value);
      for (const [k, v] of entries) list.append(h("li", {}, child(k, v)));
      if (entries.length === 0) list.append(h("li", { class: "muted" }, Array.isArray(value) ? "(empty array)" : "(empty object)"));
      details.append(list);
    },
  );
  return details;
}

function child(key, v) {
  const keyEl = h("span", { class: "vt-key" }, key);
  if (isContainer(v) && Object.keys(v).length > 0) {
    return expandable([keyEl, ": ", h("span", { class: "vt-summary" }, containerLabel(v))], v);
  }
  return h("div", { class: "vt-leaf" }, keyEl, ": ", isContainer(v) ? (Array.isArray(v) ? "[]" : "{}") : jsonLeaf(v));
}

/** The value payload of API.md §5: `preview` collapsed, `json` (when present) opens as a tree. */
export function renderValue(payload) {
  const type = payload.type || "undefined";
  const preview = payload.preview ?? "";
  const text = type === "string" ? `'${preview}'` : preview;
  const head = h("span", { class: `vt-preview t-${type}` }, text);
  if (isContainer(payload.json)) {
    // Open, the tree below shows the contents, so the summary shrinks to a one-line label.
    const label = h("span", { class: "vt-label" }, type === "array" || Array.isArray(payload.json) ? containerLabel(payload.json) : `${type === "object" ? "Object" : type} ${containerLabel(payload.json)}`);
    const tree = expandable([head, label], payload.json);
    tree.classList.add("vt-root");
    return h("div", { class: "vt" }, tree);
  }
  return h("div", { class: "vt" }, head);
}

// ------------------------------------------------------------------ events

export function renderException(payload) {
  const message = payload.message || payload.name || "Error";
  const stack = payload.stack && payload.stack.trim();
  // Stacks usually start with the message; show it once.
  const rest = stack && stack.startsWith(message) ? stack.slice(message.length).replace(/^\n/, "") : stack;
  return h(
    "div",
    { class: "line exception", role: "group", "aria-label": "Exception" },
    h("div", { class: "exc-message" }, message),
    rest ? h("pre", { class: "exc-stack" }, rest) : null,
  );
}

/** One event as a console line (REPL view). Returns null for events shown elsewhere. */
export function renderEventLine(ev) {
  const p = ev.payload || {};
  switch (ev.type) {
    case "console":
      return h("div", { class: `line console level-${p.level || "log"}`, dataset: { seq: ev.seq } }, p.text ?? "");
    case "value":
      return h("div", { class: "line value", dataset: { seq: ev.seq } }, h("span", { class: "arrow", "aria-hidden": "true" }, "←"), renderValue(p));
    case "exception": {
      const el = renderException(p);
      el.dataset.seq = ev.seq;
      return el;
    }
    case "system":
      return h(
        "div",
        { class: `line system level-${p.level || "info"}`, dataset: { seq: ev.seq } },
        h("span", { class: "sys-tag" }, p.code ? `[${p.code}]` : "[system]"),
        " ",
        p.message ?? "",
      );
    case "input_echo":
      return null;
    default:
      return h("div", { class: "line system", dataset: { seq: ev.seq } }, `[${ev.type}] ${JSON.stringify(p)}`);
  }
}

/** Payload cell for the full event log table. */
export function renderEventPayload(ev) {
  const p = ev.payload || {};
  switch (ev.type) {
    case "input_echo":
      return h("pre", { class: "log-text" }, p.text ?? "");
    case "console":
      return h("pre", { class: `log-text level-${p.level}` }, h("span", { class: "lvl" }, p.level), " ", p.text ?? "");
    case "value":
      return renderValue(p);
    case "exception":
      return renderException(p);
    case "system":
      return h("pre", { class: `log-text level-${p.level}` }, p.code ? `[${p.code}] ` : "", p.message ?? "");
    default:
      return h("pre", { class: "log-text" }, JSON.stringify(p, null, 2));
  }
}
