// The expandable value tree: how a value payload (API.md §5) is shown.
//
// A value arrives as `{type, preview, json?}` (API.md §5). `json` is JSON.stringify's view,
// which is not the value: a Map or Set becomes `{}`, a Date a string, functions and undefined
// vanish. `preview` is the Node-style inspection, which is faithful but only a few levels
// deep. So the tree follows the preview's structure and only borrows from `json`:
//   - only a plain object or array (`type` "object"/"array") opens from its JSON; a Map or
//     Set opens from its `entries` (API.md §12), each key and value a value of its own;
//   - each entry is matched with the preview's own text for it; an entry the JSON cannot show
//     as it is (a Map, Set, Date, function, class instance, getter, undefined…) stays a leaf
//     showing that Node-style text, never a misleading `{}`;
//   - where the preview stops (`[Object]`, `[Array]` past its depth, `... n more items`, or a
//     preview cut at its size limit) the tree goes on from the JSON and says so with a
//     "JSON" tag, since from there on it can only show the JSON form.

import { h } from "./dom.js";

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

/** A Node-style preview fragment shown as it is, coloured by what it looks like. */
function previewLeaf(text) {
  let cls = "j-other";
  if (/^['"`]/.test(text)) cls = "j-string";
  else if (/^-?(\d[\d_.e+-]*n?|Infinity|NaN)$/.test(text)) cls = "j-number";
  else if (text === "true" || text === "false") cls = "j-boolean";
  else if (text === "null" || text === "undefined") cls = "j-null";
  return h("span", { class: `vt-text ${cls}` }, text);
}

function containerLabel(v) {
  if (Array.isArray(v)) return `Array(${v.length})`;
  const keys = Object.keys(v);
  const shown = keys.slice(0, 5).join(", ");
  return `{${shown}${keys.length > 5 ? ", …" : ""}}`;
}

/**
 * Split a Node-style preview of a plain object `{ … }` or array `[ … ]` into its entries.
 * Returns `{kind, entries: [{key?, text}]}` or null when `text` is anything else (a Map, a
 * class instance, a cut-off preview…). Entries are split at top-level commas, skipping
 * quoted strings and anything inside brackets.
 */
export function splitPreview(text) {
  const t = text.trim();
  const kind = t.startsWith("{") ? "object" : t.startsWith("[") ? "array" : null;
  if (!kind || !t.endsWith(kind === "object" ? "}" : "]")) return null;
  if (kind === "array" && /^\[[A-Z][\w$]*(?::[^\]]*)?\]$/.test(t)) return null; // [Function: f], [Object]…
  const inner = t.slice(1, -1);
  const entries = [];
  const stack = [];
  let startAt = 0;
  for (let i = 0; i < inner.length; i++) {
    const c = inner[i];
    if (c === "'" || c === '"' || c === "`") {
      for (i++; i < inner.length && inner[i] !== c; i++) if (inner[i] === "\\") i++;
      if (i >= inner.length) return null; // unterminated: the preview was cut
    } else if (c === "{" || c === "[" || c === "(") stack.push(c);
    else if (c === "}" || c === "]" || c === ")") {
      if (stack.length === 0) return null;
      stack.pop();
    } else if (c === "," && stack.length === 0) {
      entries.push(inner.slice(startAt, i));
      startAt = i + 1;
    }
  }
  if (stack.length) return null;
  entries.push(inner.slice(startAt));
  const parts = entries.map((e) => e.trim()).filter((e) => e !== "");
  return { kind, entries: parts.map(splitKey) };
}

const KEY_RE = /^([A-Za-z_$][\w$]*|'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|\[[^\]]*\]): /;

/** "key: value" → {key, text}; a bare array element → {text}. */
function splitKey(entry) {
  const m = KEY_RE.exec(entry);
  if (!m) return { text: entry };
  let key = m[1];
  if (key.startsWith("[")) return { key, symbol: true, text: entry.slice(m[0].length) };
  if (/^['"]/.test(key)) {
    try {
      key = JSON.parse(`"${key.slice(1, -1).replace(/\\'/g, "'").replace(/"/g, '\\"')}"`);
    } catch {
      key = key.slice(1, -1);
    }
  }
  return { key, text: entry.slice(m[0].length) };
}

const ELIDED = /^\[(Object|Array)\]$/;
const MORE = /^\.\.\. (\d+) more items?$/;
const EMPTY = /^<(\d+) empty items?>$/;

/** A <details> whose children are built the first time it opens (large values stay cheap). */
function expandable(summaryChildren, buildChildren) {
  const details = h("details", { class: "vt-node" }, h("summary", {}, summaryChildren));
  details.addEventListener("toggle", () => {
    if (!details.open || details.dataset.built) return;
    details.dataset.built = "1";
    const list = h("ul", { class: "vt-children" });
    const items = buildChildren();
    for (const item of items) list.append(h("li", {}, item));
    if (items.length === 0) list.append(h("li", { class: "muted" }, "(empty)"));
    details.append(list);
  });
  return details;
}

export const jsonTag = () =>
  h(
    "span",
    { class: "vt-json-tag", title: "Past what the preview shows, this is the value's JSON form: Maps, Sets, dates and functions do not show as they are" },
    "JSON",
  );

/** Children of a JSON container, shown purely from its JSON (the part the preview elided). */
function jsonChildren(value) {
  const entries = Array.isArray(value) ? value.map((v, i) => [String(i), v]) : Object.entries(value);
  return entries.map(([k, v]) => jsonChild(k, v));
}

function jsonChild(key, v, tagged = false) {
  const keyEl = h("span", { class: "vt-key" }, key);
  if (isContainer(v) && Object.keys(v).length > 0) {
    return expandable([keyEl, ": ", h("span", { class: "vt-summary" }, containerLabel(v)), tagged ? jsonTag() : null], () => jsonChildren(v));
  }
  return h("div", { class: "vt-leaf" }, keyEl, ": ", isContainer(v) ? (Array.isArray(v) ? "[]" : "{}") : jsonLeaf(v), tagged ? jsonTag() : null);
}

/** One entry: its preview `text` and (when the JSON has it) its JSON value `json`. */
function entryChild(key, text, json, hasJson) {
  const keyEl = h("span", { class: "vt-key" }, key);
  if (hasJson && isContainer(json) && ELIDED.test(text)) return jsonChild(key, json, true);
  const parts = hasJson && isContainer(json) ? splitPreview(text) : null;
  if (parts && parts.kind === (Array.isArray(json) ? "array" : "object") && parts.entries.length > 0) {
    return expandable([keyEl, ": ", h("span", { class: "vt-summary" }, containerLabel(json))], () => previewChildren(parts, json));
  }
  return h("div", { class: "vt-leaf" }, keyEl, ": ", previewLeaf(text));
}

/** Children of a container from its split preview, matched with its JSON. */
function previewChildren(parts, json) {
  const out = [];
  if (parts.kind === "object") {
    const seen = new Set();
    for (const e of parts.entries) {
      if (e.key === undefined) {
        out.push(h("div", { class: "vt-leaf" }, previewLeaf(e.text))); // e.g. "... 3 more items"
        continue;
      }
      const has = !e.symbol && Object.prototype.hasOwnProperty.call(json, e.key);
      if (has) seen.add(e.key);
      out.push(entryChild(e.key, e.text, has ? json[e.key] : undefined, has));
    }
    // Keys the preview left out (it was cut short): from the JSON, tagged as such.
    for (const [k, v] of Object.entries(json)) if (!seen.has(k)) out.push(jsonChild(k, v, true));
    return out;
  }
  let index = 0;
  let more = false;
  for (const e of parts.entries) {
    if (e.key !== undefined) {
      out.push(entryChild(e.key, e.text, undefined, false)); // an array's extra property
    } else if (EMPTY.test(e.text)) {
      out.push(h("div", { class: "vt-leaf" }, previewLeaf(e.text)));
      index += Number(EMPTY.exec(e.text)[1]);
    } else if (MORE.test(e.text)) {
      more = true;
    } else {
      out.push(entryChild(String(index), e.text, json[index], index < json.length));
      index += 1;
    }
  }
  // Items past the preview's first hundred: from the JSON, tagged as such.
  if (more) for (let i = index; i < json.length; i++) out.push(jsonChild(String(i), json[i], true));
  return out;
}

/** How many entries a Map or Set has, from its preview (`Map(200) {…}`), or null. */
function collectionSize(preview) {
  const m = /^(?:Map|Set)\((\d+)\)/.exec(preview);
  return m ? Number(m[1]) : null;
}

/**
 * A Map or Set opened from its `entries` (API.md §12: small value payloads, the first 100):
 * each key and value is itself a value that opens, never the `{}` of its JSON.
 */
function collectionTree(payload, head) {
  const { type, entries } = payload;
  const size = collectionSize(payload.preview ?? "") ?? entries.length;
  const label = h("span", { class: "vt-label" }, `${type === "map" ? "Map" : "Set"}(${size})`);
  const tree = expandable([head, label], () => {
    const items = entries.map((entry) =>
      type === "map"
        ? h("div", { class: "vt-entry" }, renderValue(entry[0]), h("span", { class: "vt-arrow" }, "=>"), renderValue(entry[1]))
        : h("div", { class: "vt-entry" }, renderValue(entry)),
    );
    if (size > entries.length) {
      const more = size - entries.length;
      items.push(h("div", { class: "vt-leaf muted" }, `… ${more.toLocaleString("en-US")} more entr${more === 1 ? "y" : "ies"} (not sent)`));
    }
    return items;
  });
  tree.classList.add("vt-root");
  return h("div", { class: "vt" }, tree);
}

/**
 * The value payload of API.md §5: `preview` collapsed; plain objects and arrays open as a tree,
 * Maps and Sets from their `entries`.
 * With `cut` (the preview was truncated) a string gets no closing quote: it does not end there.
 */
export function renderValue(payload, { cut = false } = {}) {
  const type = payload.type || "undefined";
  const preview = payload.preview ?? "";
  const text = type === "string" ? `'${preview}${cut ? "" : "'"}` : preview;
  const head = h("span", { class: `vt-preview t-${type}` }, text);
  if ((type === "map" || type === "set") && Array.isArray(payload.entries) && payload.entries.length > 0) {
    return collectionTree(payload, head);
  }
  const json = payload.json;
  // Only a plain object or array has a JSON form worth opening (a Map's JSON is `{}`).
  const openable = (type === "object" || type === "array") && isContainer(json) && Array.isArray(json) === (type === "array");
  if (openable && Object.keys(json).length > 0) {
    const parts = splitPreview(preview);
    const matches = parts && parts.kind === type && parts.entries.length > 0;
    // Open, the tree below shows the contents, so the summary shrinks to a one-line label.
    const label = h(
      "span",
      { class: "vt-label" },
      type === "array" ? containerLabel(json) : `Object ${containerLabel(json)}`,
      matches ? null : jsonTag(),
    );
    const tree = expandable([head, label], () => (matches ? previewChildren(parts, json) : jsonChildren(json)));
    tree.classList.add("vt-root");
    return h("div", { class: "vt" }, tree);
  }
  return h("div", { class: "vt" }, head);
}
