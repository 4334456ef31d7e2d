// One execution and its full event log, read page by page with the REST cursor
// (`after_seq` + `limit`); a running execution is then followed live over the WebSocket.
//
// "Jump to the end" skips to the last page: an ended execution's `metrics.event_count` is its
// last seq; a running one has no count yet, so its last stored seq is found by probing the
// cursor (`limit=1`) with doubling steps and then halving them, a few dozen small requests.

import { get } from "../api.js";
import { LiveSocket } from "../socket.js";
import { $, h, mainData, fmtTime, fmtClock, fmtDuration, setBadge, shortId, act, showError, onReconnect, showNotFound } from "../dom.js";
import { renderEventPayload } from "../render.js";
import { renderException } from "../errors.js";
import { valueView } from "../values.js";
import { highlightedNodes } from "../editor.js";

const EID = mainData("executionId");
const tbody = $("#events-body");
const moreBtn = $("#load-more");
const jumpBtn = $("#jump-end");
const pageSize = $("#page-size");

const wantedSize = new URLSearchParams(window.location.search).get("page_size");
if (wantedSize && [...pageSize.options].some((o) => o.value === wantedSize)) pageSize.value = wantedSize;
pageSize.addEventListener("change", () => {
  const url = new URL(window.location.href);
  url.searchParams.set("page_size", pageSize.value);
  history.replaceState(null, "", url);
});

const state = { execution: null, lastSeq: 0, exhausted: false, socket: null, subscription: null };

function renderExecution(ex) {
  state.execution = ex;
  setBadge($("#exec-status"), ex.status);
  document.title = `Execution ${shortId(ex.id)} · vm-system`;
  $("#session-link").textContent = `session ${shortId(ex.session_id)}`;
  $("#session-link").href = `/sessions/${ex.session_id}`;
  $("#history-link").href = `/sessions/${ex.session_id}/history`;
  const rows = [
    ["Id", h("span", { class: "mono" }, ex.id)],
    ["Kind", ex.kind],
    ["Started", fmtTime(ex.started_at)],
    ["Ended", ex.ended_at ? fmtTime(ex.ended_at) : "—"],
    ["Duration", ex.status === "running" ? "running…" : fmtDuration(ex)],
    ["CPU", ex.metrics?.cpu_ms != null ? `${ex.metrics.cpu_ms} ms` : "—"],
    ["Events", ex.metrics?.event_count ?? "—"],
    ["Output", ex.metrics?.output_bytes != null ? `${ex.metrics.output_bytes} bytes` : "—"],
  ];
  if (ex.path) rows.push(["File", h("span", { class: "mono" }, ex.path)]);
  if (ex.args && Object.keys(ex.args).length) rows.push(["Args", h("code", {}, JSON.stringify(ex.args))]);
  if (ex.env && Object.keys(ex.env).length) rows.push(["Env", h("code", {}, JSON.stringify(ex.env))]);
  $("#exec-meta").replaceChildren(...rows.map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {}, v))));
  const inputEl = $("#exec-input");
  inputEl.hidden = ex.input == null;
  inputEl.replaceChildren(...(ex.input == null ? [] : highlightedNodes(ex.input)));
  renderOutcome(ex);
}

/** The value or the error, on its own full-width card (a big value scrolls inside it). */
function renderOutcome(ex) {
  const card = $("#exec-outcome");
  card.hidden = !ex.result && !ex.error;
  if (card.hidden) return;
  $("#outcome-h").textContent = ex.result ? "Result" : "Error";
  let body;
  // A big value scrolls inside its own region, reachable from the keyboard.
  if (ex.result) body = h("div", { class: "result-scroll", tabindex: "0", role: "region", "aria-label": "Result value" }, valueView(ex.result));
  else if (ex.error.code) body = h("p", { class: "outcome-error" }, h("strong", {}, ex.error.code), " ", ex.error.message ?? "");
  else body = renderException(ex.error, { source: ex.input });
  $("#exec-outcome-body").replaceChildren(body);
}

function addEvents(events) {
  const frag = document.createDocumentFragment();
  for (const ev of events) {
    if (ev.seq <= state.lastSeq) continue; // already shown (live and paged reads overlap)
    state.lastSeq = ev.seq;
    frag.append(
      h(
        "tr",
        { dataset: { seq: ev.seq, type: ev.type } },
        h("td", { class: "num" }, ev.seq),
        h("td", { class: "mono nowrap" }, fmtClock(ev.ts)),
        h("td", {}, h("span", { class: `ev-type ev-${ev.type}` }, ev.type)),
        h("td", {}, renderEventPayload(ev, { source: state.execution?.input })),
      ),
    );
  }
  tbody.append(frag);
  const shown = tbody.querySelectorAll("tr[data-seq]").length;
  $("#log-count").textContent = `${shown} event${shown === 1 ? "" : "s"} shown`;
}

async function loadPage() {
  const limit = Number(pageSize.value);
  const events = await get(`/executions/${EID}/events?after_seq=${state.lastSeq}&limit=${limit}`);
  addEvents(events);
  const ex = state.execution;
  const total = ex?.status !== "running" ? ex?.metrics?.event_count : undefined;
  state.exhausted = events.length < limit || (typeof total === "number" && state.lastSeq >= total);
  moreBtn.hidden = state.exhausted;
  jumpBtn.hidden = state.exhausted;
  if (state.exhausted && state.execution?.status === "running") follow();
}

/** Is there a stored event with seq > `after`? */
async function hasAfter(after) {
  return (await get(`/executions/${EID}/events?after_seq=${after}&limit=1`)).length > 0;
}

/** The seq of the last stored event. */
async function lastStoredSeq() {
  const total = state.execution?.metrics?.event_count;
  if (state.execution?.status !== "running" && typeof total === "number") return total;
  // Invariant: the last seq is > known and <= missing.
  let known = state.lastSeq;
  if (!(await hasAfter(known))) return known;
  let step = 1000;
  while (await hasAfter(known + step)) {
    known += step;
    step *= 2;
  }
  let missing = known + step;
  while (missing - known > 1) {
    const mid = Math.floor((known + missing) / 2);
    if (await hasAfter(mid)) known = mid;
    else missing = mid;
  }
  return missing;
}

function gapRow(skipped) {
  const back = h("button", { type: "button", class: "small" }, "Show from the start");
  back.addEventListener("click", (e) =>
    act(
      async () => {
        tbody.replaceChildren();
        state.lastSeq = 0;
        await loadPage();
      },
      { button: e.currentTarget, context: "Could not load events" },
    ),
  );
  return h("tr", { class: "log-gap" }, h("td", { colspan: 4 }, `Events 1–${skipped.toLocaleString("en-US")} are not shown. `, back));
}

async function jumpToEnd() {
  const last = await lastStoredSeq();
  const from = Math.max(state.lastSeq, last - Number(pageSize.value));
  if (from > state.lastSeq) {
    tbody.replaceChildren(gapRow(from));
    state.lastSeq = from;
  }
  await loadPage();
  tbody.lastElementChild?.scrollIntoView({ block: "nearest" });
}

/** Once every stored page is shown, stream the rest of a running execution. */
function follow() {
  if (state.socket) return;
  state.socket = new LiveSocket({
    onOpen: async () => {
      const reply = await state.socket.request({ type: "subscribe", execution_id: EID, after_seq: state.lastSeq });
      state.subscription = reply.subscription;
    },
    onMessage: (msg) => {
      if (msg.subscription !== state.subscription) return;
      if (msg.type === "events") addEvents(msg.events);
      else if (msg.type === "execution") renderExecution(msg.execution);
      else if (msg.type === "complete") {
        state.socket.stopped = true;
        state.socket.ws?.close(1000, "complete");
      }
    },
  });
  state.socket.connect();
}

moreBtn.addEventListener("click", (e) =>
  act(loadPage, { button: e.currentTarget, context: "Could not load events", near: e.currentTarget.parentElement }),
);
jumpBtn.addEventListener("click", (e) =>
  act(jumpToEnd, { button: e.currentTarget, context: "Could not load events", near: e.currentTarget.parentElement }),
);

let gone = false;

async function start() {
  if (gone) return;
  try {
    renderExecution(await get(`/executions/${EID}`));
    await loadPage();
  } catch (err) {
    if (err.status === 404 && !state.execution) {
      gone = true;
      showNotFound("execution", EID, ["/sessions", "All sessions"]);
      return;
    }
    showError(err, "Could not load the execution");
  }
}

onReconnect(start);
start();
