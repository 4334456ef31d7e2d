// How events look: one console line per event in the REPL, one payload cell in the event log.
//
// Console payloads (API.md §12): `level: "clear"` is console.clear() (the REPL clears its view,
// see repl/blocks.js; here it is a note), a `table` is drawn as a <table>, and `args` (sent
// when some argument is an object) are shown one by one, objects as values that open.

import { h } from "./dom.js";
import { ansiNodes } from "./ansi.js";
import { renderException } from "./errors.js";
import { renderValue } from "./valuetree.js";
import { valueView } from "./values.js";

/** The value line of the REPL: an arrow and the value with its actions. */
export function valueLine(payload) {
  return h("div", { class: "line value" }, h("span", { class: "arrow", "aria-hidden": "true" }, "←"), valueView(payload));
}

/** console.table's data as a table (its cells are Node-style previews, strings quoted). */
export function consoleTable(table) {
  const columns = Array.isArray(table.columns) ? table.columns : [];
  const rows = Array.isArray(table.rows) ? table.rows : [];
  const cell = (text, i) => {
    const t = String(text ?? "");
    const cls = /^'/.test(t) ? "j-string" : /^-?[\d.]+(e[+-]?\d+)?n?$/.test(t) ? "j-number" : /^(true|false)$/.test(t) ? "j-boolean" : "";
    return i === 0 ? h("th", { scope: "row" }, t) : h("td", { class: cls }, t);
  };
  return h(
    "div",
    { class: "console-table-wrap" },
    h(
      "table",
      { class: "console-table" },
      h("thead", {}, h("tr", {}, ...columns.map((c) => h("th", { scope: "col" }, String(c))))),
      h("tbody", {}, ...rows.map((row) => h("tr", {}, ...columns.map((_, i) => cell(row[i], i))))),
    ),
  );
}

/** A `%` directive in a format string: its arguments were substituted into `text`. */
const FORMAT = /%[sdifjoOc%]/;

/** The arguments of a console call, each on its own: strings as text, objects as values. */
function argNodes(p) {
  const args = p.args;
  const first = args[0];
  if (first?.type === "string" && FORMAT.test(first.json ?? first.preview ?? "")) return null; // formatted: the text says it all
  // console.group indents the text; the arguments carry no indent of their own.
  const own = first?.type === "string" ? /^ */.exec(first.json ?? "")[0].length : 0;
  const pad = (/^ */.exec(p.text ?? "")[0] ?? "").slice(own);
  const out = pad ? [pad] : [];
  args.forEach((a, i) => {
    if (i > 0) out.push(" ");
    if (a.type === "string") out.push(...ansiNodes(a.json ?? a.preview ?? ""));
    else out.push(h("span", { class: "console-arg" }, renderValue(a)));
  });
  return out;
}

function consoleLine(ev, p) {
  const level = p.level || "log";
  const attrs = { class: `line console level-${level}`, dataset: { seq: ev.seq } };
  if (level === "clear") return h("div", { ...attrs, class: `${attrs.class} cleared` }, "Console was cleared");
  if (p.table && typeof p.table === "object") return h("div", { ...attrs, class: `${attrs.class} has-table` }, consoleTable(p.table));
  const args = Array.isArray(p.args) && p.args.length ? argNodes(p) : null;
  if (args) return h("div", { ...attrs, class: `${attrs.class} has-args` }, ...args);
  return h("div", attrs, ansiNodes(p.text ?? ""));
}

/**
 * One event as a console line (REPL view). Returns null for events shown elsewhere.
 * `source` is the execution's input, for the code frame of a syntax error.
 */
export function renderEventLine(ev, { source } = {}) {
  const p = ev.payload || {};
  switch (ev.type) {
    case "console":
      return consoleLine(ev, p);
    case "value": {
      const el = valueLine(p);
      el.dataset.seq = ev.seq;
      return el;
    }
    case "exception": {
      const el = renderException(p, { source });
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
export function renderEventPayload(ev, { source } = {}) {
  const p = ev.payload || {};
  switch (ev.type) {
    case "input_echo":
      return h("pre", { class: "log-text" }, p.text ?? "");
    case "console":
      if (p.level === "clear") return h("pre", { class: "log-text level-clear" }, h("span", { class: "lvl" }, "clear"), " console.clear(): the console was cleared");
      if (p.table && typeof p.table === "object") return h("div", { class: `log-text level-${p.level}` }, consoleTable(p.table));
      return h("pre", { class: `log-text level-${p.level}` }, h("span", { class: "lvl" }, p.level), " ", ansiNodes(p.text ?? ""));
    case "value":
      return valueView(p);
    case "exception":
      return renderException(p, { source });
    case "system":
      return h("pre", { class: `log-text level-${p.level}` }, p.code ? `[${p.code}] ` : "", p.message ?? "");
    default:
      return h("pre", { class: "log-text" }, JSON.stringify(p, null, 2));
  }
}
