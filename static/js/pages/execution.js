// One execution and its full event log, read page by page with the REST cursor
// (`after_seq` + `limit`); a running execution is then followed live over the WebSocket.

import { get } from "../api.js";
import { LiveSocket } from "../socket.js";
import { $, h, mainData, fmtTime, fmtClock, fmtDuration, setBadge, shortId, act, showError, onReconnect, showNotFound } from "../dom.js";
import { renderEventPayload, renderValue, renderException } from "../render.js";

const EID = mainData("executionId");
const tbody = $("#events-body");
const moreBtn = $("#load-more");
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
  if (ex.result) rows.push(["Result", renderValue(ex.result)]);
  if (ex.error) rows.push(["Error", ex.error.code ? h("span", {}, h("strong", {}, ex.error.code), " ", ex.error.message ?? "") : renderException(ex.error)]);
  $("#exec-meta").replaceChildren(...rows.map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {}, v))));
  const inputEl = $("#exec-input");
  inputEl.hidden = ex.input == null;
  inputEl.textContent = ex.input ?? "";
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
        h("td", {}, renderEventPayload(ev)),
      ),
    );
  }
  tbody.append(frag);
  $("#log-count").textContent = `${state.lastSeq} event${state.lastSeq === 1 ? "" : "s"} shown`;
}

async function loadPage() {
  const limit = Number(pageSize.value);
  const events = await get(`/executions/${EID}/events?after_seq=${state.lastSeq}&limit=${limit}`);
  addEvents(events);
  state.exhausted = events.length < limit;
  moreBtn.hidden = state.exhausted;
  if (state.exhausted && state.execution?.status === "running") follow();
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
