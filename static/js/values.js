// A value with its actions: a visible "truncated" marker, "show all" and "copy value".
//
// The server cuts a value's `preview` at 10,000 characters (API.md §5). A cut preview must not
// look whole, so `truncation()` finds out whether it was cut, from (newest first):
//   - the marker the server appends to a cut preview (`… 10,003 more characters`, API.md §12);
//   - `truncated: true` (the value was too big for `json`, which is then omitted);
//   - a string whose `json` is longer than its preview;
//   - a preview of exactly the limit's length (servers before the marker existed).
// "Show all" renders the whole value from `json` when there is one; "copy value" copies the
// whole value: a string's own text, the pretty JSON of a plain object or array, and the
// preview for everything else (a Map's JSON is `{}`, a function has none).

import { h, copyButton, labelButton, setButtonLabel } from "./dom.js";
import { renderValue, jsonTag } from "./valuetree.js";

export const PREVIEW_LIMIT = 10000;
const MARKER = /\s*… ?([\d,.\u202f\u00a0 ]+) more characters?$/;

/** `{cut, preview, more}`: whether the preview was cut, the preview without the server's marker, and how much is missing (or null when unknown). */
export function truncation(payload) {
  const raw = payload.preview ?? "";
  const m = MARKER.exec(raw);
  if (m) return { cut: true, preview: raw.slice(0, m.index), more: Number(m[1].replace(/\D/g, "")) };
  const json = payload.json;
  if (payload.type === "string" && typeof json === "string" && json.length > raw.length) {
    return { cut: true, preview: raw, more: json.length - raw.length };
  }
  if (payload.truncated === true || raw.length >= PREVIEW_LIMIT) return { cut: true, preview: raw, more: null };
  return { cut: false, preview: raw, more: null };
}

/**
 * Only plain objects and arrays are copied and shown as JSON: a Map's JSON is `{}`, NaN's is
 * `null`, and a primitive's preview is already exact.
 */
const JSON_FAITHFUL = new Set(["object", "array"]);

function hasJson(payload) {
  return Object.prototype.hasOwnProperty.call(payload, "json") && payload.json !== undefined && payload.type !== "undefined";
}

/** The text "copy value" puts on the clipboard. */
export function copyableText(payload) {
  if (payload.type === "string" && typeof payload.json === "string") return payload.json;
  if (hasJson(payload) && JSON_FAITHFUL.has(payload.type)) return JSON.stringify(payload.json, null, 2);
  return truncation(payload).preview;
}

function fmtCount(n) {
  return n.toLocaleString("en-US");
}

function marker(t, payload) {
  const what = t.more != null ? `… ${fmtCount(t.more)} more character${t.more === 1 ? "" : "s"}` : "… truncated";
  const why = hasJson(payload)
    ? "The preview was cut; “show all” shows the whole value."
    : "The preview was cut, and the whole value was too big to keep (over the template's max_output_kb).";
  return h("span", { class: "vt-truncated", title: why }, what);
}

/** The whole value, from its JSON (a string as text, anything else as pretty JSON). */
function fullView(payload) {
  if (payload.type === "string") {
    return h("div", { class: "value-full", tabindex: "0", role: "region", "aria-label": "Whole value" }, h("span", { class: "vt-preview t-string" }, `'${payload.json}'`));
  }
  return h(
    "div",
    { class: "value-full", tabindex: "0", role: "region", "aria-label": "Whole value" },
    JSON_FAITHFUL.has(payload.type) ? null : jsonTag(),
    h("pre", { class: "value-json" }, JSON.stringify(payload.json, null, 2)),
  );
}

/** A value payload shown as its tree, with the truncation marker and the actions. */
export function valueView(payload) {
  const t = truncation(payload);
  const shown = t.cut ? { ...payload, preview: t.preview } : payload;
  const tree = renderValue(shown, { cut: t.cut });
  const body = h("div", { class: "value-body" }, tree, t.cut ? marker(t, payload) : null);
  const actions = h("span", { class: "value-actions" });
  if (t.cut && hasJson(payload)) {
    const showAll = labelButton("show all", { title: "Show the whole value", className: "show-all" });
    showAll.setAttribute("aria-expanded", "false");
    showAll.addEventListener("click", () => {
      const open = showAll.getAttribute("aria-expanded") === "true";
      showAll.setAttribute("aria-expanded", String(!open));
      setButtonLabel(showAll, open ? "show all" : "show less");
      body.replaceChildren(...(open ? [tree, marker(t, payload)] : [fullView(payload)]));
    });
    actions.append(showAll);
  }
  actions.append(copyButton("copy value", () => copyableText(payload), { title: "Copy the whole value" }));
  return h("div", { class: "value-view", dataset: { truncated: t.cut ? "true" : "false" } }, body, actions);
}
