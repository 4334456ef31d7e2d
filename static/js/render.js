// How events look: one console line per event in the REPL, one payload cell in the event log.
//
// Console events are rendered by level; the levels the server will add (API.md §12: "clear"
// clears the view, "log" with a `table` draws a table) slot in at `consoleLine`.

import { h } from "./dom.js";
import { ansiNodes } from "./ansi.js";
import { renderException } from "./errors.js";
import { valueView } from "./values.js";

/** The value line of the REPL: an arrow and the value with its actions. */
export function valueLine(payload) {
  return h("div", { class: "line value" }, h("span", { class: "arrow", "aria-hidden": "true" }, "←"), valueView(payload));
}

function consoleLine(ev, p) {
  return h("div", { class: `line console level-${p.level || "log"}`, dataset: { seq: ev.seq } }, ansiNodes(p.text ?? ""));
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
