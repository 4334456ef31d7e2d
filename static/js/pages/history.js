// History: every execution of a session, newest first, each linking to its full event log,
// with a text search, status and kind filters, and pages of 100.
//
// The REST list answers at most 1,000 executions at a time (`limit` 1..1000, newest first) and
// continues with `before=<the oldest id so far>`: the page reads the newest 1,000, filters and
// pages them in the browser, and "Load older executions" reads the next 1,000.

import { get } from "../api.js";
import { $, h, mainData, fmtTime, fmtDuration, badge, shortId, onReconnect, showError, showNotFound } from "../dom.js";

const SID = mainData("sessionId");
// Executions read at a time: the API's largest `limit`, or fewer with `?batch=N` in the address.
const MAX = Math.min(1000, Math.max(1, Number(new URLSearchParams(location.search).get("batch")) || 1000));
const PER_PAGE = 100;
const body = $("#history-body");
const textEl = $("#history-text");
const statusEl = $("#history-status");
const kindEl = $("#history-kind");
$("#session-link").textContent = `session ${shortId(SID)}`;

const state = { all: [], page: 0, more: false };
const moreEl = $("#history-more");

function summary(ex) {
  if (ex.kind === "repl") return ex.input ?? "";
  if (ex.kind === "background") return "timers left running by earlier inputs";
  const args = ex.args && Object.keys(ex.args).length ? ` ${JSON.stringify(ex.args)}` : "";
  return `${ex.path ?? ""}${args}`;
}

function truncate(text, n) {
  return text.length > n ? `${text.slice(0, n)}…` : text;
}

function row(ex) {
  return h(
    "tr",
    { dataset: { executionId: ex.id } },
    h("td", { dataset: { label: "Started" } }, h("a", { href: `/executions/${ex.id}` }, fmtTime(ex.started_at))),
    h("td", { dataset: { label: "Kind" } }, ex.kind),
    h(
      "td",
      { class: "code-cell", dataset: { label: ex.kind === "repl" ? "Input" : ex.kind === "background" ? "Timers" : "File" } },
      h("a", { href: `/executions/${ex.id}`, class: "mono code-summary" }, truncate(summary(ex), 160)),
    ),
    h("td", { dataset: { label: "Status" } }, badge(ex.status)),
    h("td", { dataset: { label: "Duration" } }, ex.status === "running" ? "running…" : fmtDuration(ex)),
    h("td", { dataset: { label: "Events" } }, ex.metrics?.event_count ?? "—"),
  );
}

function message(text) {
  body.replaceChildren(h("tr", {}, h("td", { colspan: 6, class: "muted" }, text)));
}

function matching() {
  const text = textEl.value.trim().toLowerCase();
  return state.all.filter(
    (ex) =>
      (!statusEl.value || ex.status === statusEl.value) &&
      (!kindEl.value || ex.kind === kindEl.value) &&
      (!text || summary(ex).toLowerCase().includes(text)),
  );
}

function render() {
  const list = matching();
  const pages = Math.max(1, Math.ceil(list.length / PER_PAGE));
  state.page = Math.min(state.page, pages - 1);
  const from = state.page * PER_PAGE;
  const shown = list.slice(from, from + PER_PAGE);
  if (state.all.length === 0) message("This session has not run anything yet.");
  else if (shown.length === 0) message("No execution matches these filters.");
  else body.replaceChildren(...shown.map(row));
  $("#history-newer").disabled = state.page === 0;
  $("#history-older").disabled = state.page >= pages - 1;
  const filtered = list.length !== state.all.length ? ` (${list.length.toLocaleString("en-US")} of ${state.all.length.toLocaleString("en-US")} match)` : "";
  const range = shown.length ? `${(from + 1).toLocaleString("en-US")}–${(from + shown.length).toLocaleString("en-US")}` : "0";
  const capped = state.more ? ` Older executions are not loaded yet.` : "";
  $("#history-range").textContent = `Showing ${range} of ${list.length.toLocaleString("en-US")}${filtered}.${capped}`;
  moreEl.hidden = !state.more;
}

let gone = false;

async function load() {
  if (gone) return;
  try {
    // The execution list of an unknown session is just empty: ask for the session itself.
    await get(`/sessions/${SID}`);
    state.all = await get(`/executions?session_id=${SID}&limit=${MAX}`);
    state.more = state.all.length === MAX;
    render();
  } catch (err) {
    if (err.status === 404) {
      gone = true;
      showNotFound("session", SID, ["/sessions", "All sessions"]);
      return;
    }
    message("Could not load the history.");
    showError(err, "Could not load the history");
  }
}

for (const el of [textEl, statusEl, kindEl]) {
  el.addEventListener(el === textEl ? "input" : "change", () => {
    state.page = 0;
    render();
  });
}
$("#history-filter").addEventListener("submit", (e) => e.preventDefault());
$("#history-newer").addEventListener("click", () => {
  state.page -= 1;
  render();
});
$("#history-older").addEventListener("click", () => {
  state.page += 1;
  render();
});

moreEl.addEventListener("click", async () => {
  moreEl.disabled = true;
  try {
    const oldest = state.all[state.all.length - 1];
    const older = await get(`/executions?session_id=${SID}&limit=${MAX}&before=${oldest.id}`);
    const seen = new Set(state.all.map((ex) => ex.id));
    state.all = state.all.concat(older.filter((ex) => !seen.has(ex.id)));
    state.more = older.length === MAX;
    render();
  } catch (err) {
    showError(err, "Could not load older executions");
  } finally {
    moreEl.disabled = false;
  }
});

onReconnect(load);
load();
