// The session page: a REPL whose output streams over the WebSocket.
//
// Streaming and resume: the page keeps one session subscription. `cursor` is the highest event
// id it has applied; after a reload the recent executions are read over REST first, and after
// any (re)connect the page subscribes with `after_id = cursor`, so the server replays exactly
// what it missed. Every event passes through `seen` (event ids) and its block's `lastSeq`, so a
// replayed or doubly delivered event is never shown twice, and a gap (never expected) is
// filled from REST before anything after it is shown.

import { get, post } from "../api.js";
import { LiveSocket } from "../socket.js";
import { $, h, mainData, fmtDuration, setBadge, showError, showErrorAt, clearAt, act, shortId, closeQuestion, showNotFound } from "../dom.js";
import { isIncomplete } from "../incomplete.js";
import { renderEventLine, renderValue, renderException } from "../render.js";

const SID = mainData("sessionId");
const RECENT_EXECUTIONS = 30;
const MAX_LINES_PER_BLOCK = 5000;
const PAGE = 5000;
const HISTORY_MAX = 500;

const logEl = $("#repl-log");
const input = $("#repl-input");
const form = $("#repl-form");

const state = {
  session: null,
  cursor: 0,
  seen: new Set(),
  blocks: new Map(),
  subscription: null,
};

// ------------------------------------------------------------------ scrolling

function nearBottom() {
  return logEl.scrollHeight - logEl.scrollTop - logEl.clientHeight < 80;
}

function keepBottom(fn) {
  const stick = nearBottom();
  fn();
  if (stick) logEl.scrollTop = logEl.scrollHeight;
}

// ------------------------------------------------------------------ execution blocks

class Block {
  constructor(execution) {
    this.id = execution.id;
    this.execution = execution;
    this.lastSeq = 0;
    this.lines = 0;
    this.hidden = 0;
    this.capped = false; // loaded from history and cut: later events are not shown here
    this.terminal = false;
    this.backfilling = null;
    this.pending = [];
    this.seenAt = Date.now();

    this.statusEl = h("span", { class: "badge" });
    this.durationEl = h("span", { class: "duration" });
    this.cancelBtn = h("button", { type: "button", class: "cancel small", onclick: () => cancel(this) }, "Cancel");
    this.inputEl = h("pre", { class: "exec-input" });
    this.outEl = h("div", { class: "exec-out" });
    this.moreEl = h("div", { class: "line more", hidden: true });
    this.el = h(
      "article",
      { class: "exec", dataset: { executionId: this.id }, "aria-label": `Execution ${shortId(this.id)}` },
      h(
        "header",
        { class: "exec-head" },
        h("span", { class: "kind" }, execution.kind || "repl"),
        this.statusEl,
        this.durationEl,
        h("span", { class: "spacer" }),
        this.cancelBtn,
        h("a", { class: "log-link", href: `/executions/${this.id}` }, "full log"),
      ),
      this.inputEl,
      this.outEl,
      this.moreEl,
    );
    this.update(execution);
  }

  update(execution) {
    // A record read before the end (e.g. the `accepted` reply) must not undo a later end.
    if (execution.status === "running" && this.execution.status && this.execution.status !== "running") return;
    this.execution = { ...this.execution, ...execution };
    const ex = this.execution;
    if (ex.kind) this.el.querySelector(".kind").textContent = ex.kind;
    if (ex.kind === "run_file" && ex.path) {
      const args = ex.args && Object.keys(ex.args).length ? ` ${JSON.stringify(ex.args)}` : "";
      this.inputEl.textContent = `run ${ex.path}${args}`;
      this.inputEl.classList.add("file");
    } else if (ex.kind === "startup" && ex.path) {
      this.inputEl.textContent = `startup ${ex.path}`;
      this.inputEl.classList.add("file");
    } else if (ex.input != null) {
      this.inputEl.textContent = ex.input;
    }
    const status = ex.status || "running";
    setBadge(this.statusEl, status);
    this.el.dataset.status = status;
    const running = status === "running";
    this.cancelBtn.hidden = !running;
    if (!running) this.durationEl.textContent = fmtDuration(ex);
  }

  tick() {
    if (this.execution.status !== "running") return;
    const started = Date.parse(this.execution.started_at);
    const ms = Math.max(0, Date.now() - (isNaN(started) ? this.seenAt : Math.min(started, Date.now())));
    this.durationEl.textContent = `${(ms / 1000).toFixed(1)} s…`;
  }

  showOutcomeFromRecord() {
    const ex = this.execution;
    if (this.terminal) return;
    if (ex.result) this.append(h("div", { class: "line value" }, h("span", { class: "arrow", "aria-hidden": "true" }, "←"), renderValue(ex.result)));
    else if (ex.error) this.append(renderException(ex.error.message ? ex.error : { message: ex.error.code }));
    this.terminal = true;
  }

  append(node) {
    this.outEl.append(node);
  }

  /** Apply one event in seq order; an event after a gap waits while REST fills the gap. */
  apply(ev) {
    if (ev.seq <= this.lastSeq) return;
    if (ev.seq > this.lastSeq + 1) {
      this.pending.push(ev);
      this.backfill();
      return;
    }
    this.render(ev);
    if (this.pending.length) this.drain();
  }

  drain() {
    this.pending.sort((a, b) => a.seq - b.seq);
    while (this.pending.length && this.pending[0].seq <= this.lastSeq + 1) {
      const ev = this.pending.shift();
      if (ev.seq === this.lastSeq + 1) this.render(ev);
    }
    if (this.pending.length) this.backfill();
  }

  render(ev) {
    this.lastSeq = ev.seq;
    if (this.capped) return;
    if (ev.type === "input_echo") {
      if (!this.inputEl.textContent) this.inputEl.textContent = ev.payload.text ?? "";
      return;
    }
    if (ev.type === "value" || ev.type === "exception") this.terminal = true;
    if (ev.type === "console" && this.lines >= MAX_LINES_PER_BLOCK) {
      this.hidden += 1;
      this.showMore(`${this.hidden} more line${this.hidden === 1 ? "" : "s"}`);
      return;
    }
    const line = renderEventLine(ev);
    if (line) {
      this.lines += 1;
      this.append(line);
    }
  }

  showMore(what) {
    this.moreEl.hidden = false;
    this.moreEl.replaceChildren(`… ${what} not shown here — `, h("a", { href: `/executions/${this.id}` }, "open the full log"));
  }

  backfill() {
    if (this.backfilling) return;
    this.backfilling = true;
    (async () => {
      try {
        while (this.pending.length && this.pending[0].seq > this.lastSeq + 1) {
          const events = await get(`/executions/${this.id}/events?after_seq=${this.lastSeq}&limit=${PAGE}`);
          keepBottom(() => events.forEach((ev) => acceptEvent(ev)));
          if (events.length === 0) break;
          this.pending.sort((a, b) => a.seq - b.seq);
        }
      } catch (err) {
        showError(err, "Could not load missing output");
      } finally {
        this.backfilling = false;
        keepBottom(() => this.drain());
      }
    })();
  }
}

function ensureBlock(execution) {
  let block = state.blocks.get(execution.id);
  if (block) {
    if (Object.keys(execution).length > 1) block.update(execution);
    return block;
  }
  block = new Block(execution);
  state.blocks.set(execution.id, block);
  $("#repl-empty")?.remove();
  keepBottom(() => logEl.append(block.el));
  if (!execution.started_at) {
    // Started elsewhere (CLI, another tab) and first heard of through its events.
    get(`/executions/${execution.id}`).then((ex) => block.update(ex), (err) => showError(err));
  }
  return block;
}

/** Every event, from REST or the socket, enters here. */
function acceptEvent(ev) {
  if (state.seen.has(ev.id)) return;
  const block = ensureBlock({ id: ev.execution_id });
  state.seen.add(ev.id);
  if (ev.id > state.cursor) state.cursor = ev.id;
  block.apply(ev);
}

setInterval(() => {
  for (const b of state.blocks.values()) b.tick();
}, 200);

// ------------------------------------------------------------------ session header

function renderSession(session) {
  state.session = session;
  const meta = session.runtime_meta || {};
  $("#session-title").textContent = `Session ${shortId(session.id)}`;
  setBadge($("#session-status"), session.status);
  document.title = `Session ${shortId(session.id)} · vm-system`;
  $("#session-template").replaceChildren(
    h("a", { href: `/templates/${session.vm_id}` }, meta.template_name || shortId(session.vm_id)),
  );
  $("#session-worktree").textContent = session.worktree_path;
  $("#session-workspace").textContent = `${session.workspace_id} @ ${session.base_commit_oid}`;
  const errEl = $("#session-error");
  errEl.hidden = !session.last_error;
  errEl.textContent = session.last_error || "";
  const ready = session.status === "ready";
  input.disabled = !ready;
  $("#repl-run").disabled = !ready;
  $("#run-file-form button").disabled = !ready;
  $("#close-session").hidden = session.status === "closed";
  input.placeholder = ready
    ? "Type JavaScript, press Enter"
    : `This session is ${session.status}; it cannot run code. Start a new session from its template.`;
}

// ------------------------------------------------------------------ input history

const HISTORY_KEY = `vm-system.history.${SID}`;

function loadHistory() {
  try {
    const list = JSON.parse(localStorage.getItem(HISTORY_KEY) || "[]");
    return Array.isArray(list) ? list.filter((x) => typeof x === "string") : [];
  } catch {
    return [];
  }
}

const hist = { items: loadHistory(), index: -1, draft: "" };
hist.index = hist.items.length;

function remember(text) {
  hist.items = loadHistory(); // another tab of this session may have added entries
  if (hist.items[hist.items.length - 1] !== text) hist.items.push(text);
  if (hist.items.length > HISTORY_MAX) hist.items = hist.items.slice(-HISTORY_MAX);
  try {
    localStorage.setItem(HISTORY_KEY, JSON.stringify(hist.items));
  } catch {
    /* storage full or disabled: history stays in memory */
  }
  hist.index = hist.items.length;
  hist.draft = "";
}

function recall(delta) {
  if (hist.index === hist.items.length) hist.draft = input.value;
  const next = hist.index + delta;
  if (next < 0 || next > hist.items.length) return false;
  hist.index = next;
  input.value = next === hist.items.length ? hist.draft : hist.items[next];
  autosize();
  const end = input.value.length;
  input.setSelectionRange(end, end);
  return true;
}

function autosize() {
  input.style.height = "auto";
  input.style.height = `${Math.min(input.scrollHeight, 320)}px`;
}

input.addEventListener("input", autosize);
input.addEventListener("keydown", (e) => {
  if (e.isComposing) return;
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey) && !e.shiftKey && !e.altKey) {
    // Ctrl+Enter / Cmd+Enter: run now, whatever the input looks like.
    e.preventDefault();
    submitInput();
    return;
  }
  if (e.key === "Enter" && !e.shiftKey && !e.altKey && !e.ctrlKey && !e.metaKey) {
    // Like Node's REPL: an unfinished statement (open bracket, string, trailing operator…)
    // gets a new line and stays in the editor; anything else runs. Shift+Enter (the
    // browser's default) always adds a line.
    if (isIncomplete(input.value)) return;
    e.preventDefault();
    submitInput();
    return;
  }
  if (e.altKey || e.ctrlKey || e.metaKey || e.shiftKey) return;
  const { selectionStart: s, selectionEnd: end, value } = input;
  // An entry recalled and not edited is stepped over whole; otherwise the arrows move the
  // caret inside multi-line input and reach the history only from its first / last line.
  const browsing = hist.index < hist.items.length && value === hist.items[hist.index];
  if (e.key === "ArrowUp" && s === end && (browsing || !value.slice(0, s).includes("\n"))) {
    if (recall(-1)) e.preventDefault();
  } else if (e.key === "ArrowDown" && s === end && (browsing || !value.slice(end).includes("\n"))) {
    if (recall(1)) e.preventDefault();
  }
});

// ------------------------------------------------------------------ actions

function inlineError(err, context) {
  const code = err.code || err.name || "Error";
  const node = h(
    "div",
    { class: "repl-error", role: "alert" },
    h("strong", {}, code),
    " ",
    context ? `${context}: ${err.message}` : err.message,
  );
  keepBottom(() => logEl.append(node));
  logEl.scrollTop = logEl.scrollHeight;
}

/** Start an execution; a failure is shown next to `near` (a form) or else in the log. */
async function startExecution(message, restore, near) {
  try {
    const reply = await socket.request(message);
    if (near) clearAt(near);
    ensureBlock(reply.execution);
    logEl.scrollTop = logEl.scrollHeight;
    // The session subscription already carries this execution; drop the duplicate stream.
    socket.send({ type: "unsubscribe", subscription: reply.subscription });
  } catch (err) {
    if (near) showErrorAt(near, err, "Could not run the file");
    else inlineError(err);
    if (restore && !input.value) {
      input.value = restore;
      autosize();
    }
  }
}

function submitInput() {
  const text = input.value;
  if (!text.trim()) return;
  if (!socket.live) {
    inlineError({ code: "DISCONNECTED", message: "Not connected to the server yet; your input is kept — press Enter again once reconnected" });
    return;
  }
  remember(text);
  input.value = "";
  autosize();
  startExecution({ type: "execute", session_id: SID, input: text }, text);
}

form.addEventListener("submit", (e) => {
  e.preventDefault();
  submitInput();
  input.focus();
});

async function cancel(block) {
  block.cancelBtn.disabled = true;
  try {
    const reply = socket.live
      ? (await socket.request({ type: "cancel", execution_id: block.id })).execution
      : await post(`/executions/${block.id}/cancel`);
    block.update(reply);
  } catch (err) {
    inlineError(err, "Cancel failed");
  } finally {
    block.cancelBtn.disabled = false;
  }
}

$("#run-file-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const runForm = e.currentTarget;
  const path = $("#run-path").value.trim();
  let args;
  try {
    args = JSON.parse($("#run-args").value.trim() || "{}");
    if (args === null || typeof args !== "object" || Array.isArray(args)) throw new Error("not an object");
  } catch (err) {
    showErrorAt(runForm, { code: "INVALID_ARGS", message: `Args must be a JSON object, e.g. {"n": 3} (${err.message})` });
    $("#run-args").focus();
    return;
  }
  if (!socket.live) {
    showErrorAt(runForm, { code: "DISCONNECTED", message: "Not connected to the server yet; try again once reconnected" });
    return;
  }
  startExecution({ type: "run_file", session_id: SID, path, args }, undefined, runForm);
});

$("#close-session").addEventListener("click", (e) => {
  const running = [...state.blocks.values()].some((b) => b.execution.status === "running");
  if (!window.confirm(closeQuestion({ id: SID }, { running }))) return;
  const near = e.currentTarget.closest(".session-head");
  act(async () => renderSession(await post(`/sessions/${SID}/close`)), { button: e.currentTarget, context: "Close failed", near });
});

// ------------------------------------------------------------------ live connection

function setConn(stateName, text) {
  const el = $("#conn-state");
  el.dataset.state = stateName;
  el.textContent = text;
}

function onMessage(msg) {
  if (msg.subscription !== state.subscription) return;
  switch (msg.type) {
    case "events":
      keepBottom(() => msg.events.forEach((ev) => acceptEvent({ ...ev, execution_id: ev.execution_id || msg.execution_id })));
      break;
    case "execution":
      ensureBlock(msg.execution);
      break;
    case "session":
      renderSession(msg.session);
      break;
    default:
      break;
  }
}

async function onOpen() {
  state.subscription = null;
  const reply = await socket.request({ type: "subscribe", session_id: SID, after_id: state.cursor });
  state.subscription = reply.subscription;
  // What may have changed while we were away: the session's status and how running
  // executions ended (their events are being replayed by the subscription itself).
  renderSession(await get(`/sessions/${SID}`));
  const running = [...state.blocks.values()].filter((b) => b.execution.status === "running");
  await Promise.all(running.map(async (b) => b.update(await get(`/executions/${b.id}`))));
}

const socket = new LiveSocket({
  onOpen,
  onMessage,
  onLive: () => setConn("live", "live"),
  onDown: () => {
    state.subscription = null;
    setConn("down", "reconnecting…");
  },
});
window.__vmDropSocket = () => socket.drop();

// ------------------------------------------------------------------ start

async function loadEvents(block) {
  const ended = block.execution.status !== "running";
  for (;;) {
    const limit = ended ? MAX_LINES_PER_BLOCK : PAGE;
    const events = await get(`/executions/${block.id}/events?after_seq=${block.lastSeq}&limit=${limit}`);
    events.forEach((ev) => acceptEvent(ev));
    if (events.length < limit) return;
    if (ended) {
      // Long finished output: show the start here, the rest on the execution's own page.
      const total = block.execution.metrics?.event_count;
      block.capped = true;
      block.showMore(total ? `${total - block.lastSeq} more events` : "more events");
      block.showOutcomeFromRecord();
      return;
    }
  }
}

async function start() {
  try {
    renderSession(await get(`/sessions/${SID}`));
    const executions = await get(`/executions?session_id=${SID}&limit=${RECENT_EXECUTIONS}`);
    if (executions.length === RECENT_EXECUTIONS) {
      logEl.prepend(
        h("p", { class: "repl-older" }, "Older executions are in the ", h("a", { href: `/sessions/${SID}/history` }, "history"), "."),
      );
    }
    for (const ex of executions.reverse()) {
      const block = ensureBlock(ex);
      await loadEvents(block);
    }
    logEl.scrollTop = logEl.scrollHeight;
  } catch (err) {
    if (err.status === 404 && !state.session) {
      // A well-formed id the server does not know: no REPL to connect, nothing to retry.
      showNotFound("session", SID, ["/sessions", "All sessions"]);
      return;
    }
    showError(err, "Could not load the session");
    if (err.status === 404 || err.status === 400) return;
  }
  socket.connect();
  input.focus();
}

start();
