// The session page: a REPL whose output streams over the WebSocket.
//
// Streaming and resume: the page keeps one session subscription. `log.cursor` is the highest
// event id it has applied; after a reload the recent executions are read over REST first, and
// after any (re)connect the page subscribes with `after_id = cursor`, so the server replays
// exactly what it missed (repl/blocks.js shows each event once, in order).

import { get, post } from "../api.js";
import { LiveSocket } from "../socket.js";
import { $, h, mainData, fmtDuration, setBadge, showError, showErrorAt, clearAt, act, shortId, closeQuestion, showNotFound } from "../dom.js";
import { stripAnsi } from "../ansi.js";
import { createEditor } from "../editor.js";
import { Log } from "../repl/blocks.js";
import { InputHistory } from "../repl/history.js";

const SID = mainData("sessionId");
const RECENT_EXECUTIONS = 30; // shown again after a reload
const HISTORY_SEED = 100; // stored executions read for the input history

const state = { session: null, subscription: null };
const runBtn = $("#repl-run");
const announcer = $("#repl-announce");

const hist = new InputHistory(`vm-system.history.${SID}`);
const log = new Log($("#repl-log"), { hooks: { cancel: (block) => cancel(block), ended: announceEnd }, historyHref: `/sessions/${SID}/history` });

const editor = createEditor({
  parent: $("#repl-editor"),
  id: "repl-input",
  label: "JavaScript input",
  describedBy: "repl-keys",
  placeholderText: "Type JavaScript, press Enter",
  history: hist,
  onSubmit: () => submitInput(),
  onCancel: () => cancelRunning(),
  onClear: () => clearView(),
  complete: (input, cursor) => completions(input, cursor),
});

/** Completions at `cursor` (API.md §12), from the server; null when it cannot answer now. */
async function completions(input, cursor) {
  if (!socket.live || state.session?.status !== "ready") return null;
  try {
    return await socket.request({ type: "complete", session_id: SID, input, cursor });
  } catch {
    return null; // no popup is better than an error while typing
  }
}

// ------------------------------------------------------------------ announcements
//
// The log is `role="log"` but not live (a flood would be read out line by line); instead each
// execution that ends while the page is open is summed up once in a polite status region.

function summary(block) {
  const ex = block.execution;
  const parts = [`${ex.kind === "repl" || !ex.kind ? "Execution" : ex.kind.replace("_", " ")} ${ex.status} in ${fmtDuration(ex)}`];
  if (block.lineCount) parts.push(`${block.lineCount.toLocaleString("en-US")} console line${block.lineCount === 1 ? "" : "s"}`);
  if (ex.result) parts.push(`value ${stripAnsi(ex.result.preview ?? "").slice(0, 120)}`);
  else if (ex.error) parts.push(ex.error.message || ex.error.code || "error");
  return parts.join(". ");
}

function announceEnd(block) {
  announcer.textContent = "";
  // A new text node in the next task is announced even when the text repeats.
  setTimeout(() => {
    announcer.textContent = summary(block);
  }, 50);
}

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
  editor.setEnabled(ready);
  runBtn.disabled = !ready;
  $("#run-file-form button").disabled = !ready;
  $("#close-session").hidden = session.status === "closed";
  $("#fork-session").hidden = !ready;
  $("#new-from-template").hidden = session.status !== "closed" && session.status !== "crashed";
  const parent = meta.forked_from;
  $("#session-forked").hidden = !parent;
  if (parent) {
    $("#session-forked-from").replaceChildren(
      h("a", { href: `/sessions/${parent.session_id}` }, `Session ${shortId(parent.session_id)}`),
      parent.execution_id ? [" after ", h("a", { href: `/executions/${parent.execution_id}` }, `execution ${shortId(parent.execution_id)}`)] : " (before any execution)",
    );
  }
  editor.setPlaceholder(
    ready
      ? "Type JavaScript, press Enter"
      : `This session is ${session.status}; it cannot run code. Start a new session from its template.`,
  );
}

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
  log.el.append(node);
  log.scrollToEnd();
}

/**
 * The `execute` message for `text` (API.md §12): timers left pending run on in the session's
 * background execution, as in the Node REPL, and input typed while the session is busy waits
 * its turn instead of being refused.
 */
function executeMessage(text) {
  return { type: "execute", session_id: SID, input: text, timers: "background", queue: true };
}

/**
 * Start an execution; a failure is shown next to `near` (a form) or else in the log. `shown` is
 * how a queued request looks until it starts (its input, or the file it runs).
 */
async function startExecution(message, restore, near, shown) {
  let waiting = null;
  const onInterim = (msg) => {
    if (msg.type === "queued" && !waiting) waiting = log.queued(shown.text, { file: shown.file });
  };
  try {
    const reply = await socket.request(message, { onInterim });
    if (near) clearAt(near);
    log.ensure(reply.execution, { replacing: waiting });
    log.scrollToEnd();
    // The session subscription already carries this execution; drop the duplicate stream.
    socket.send({ type: "unsubscribe", subscription: reply.subscription });
  } catch (err) {
    waiting?.remove();
    if (near) showErrorAt(near, err, "Could not run the file");
    else inlineError(err);
    if (restore && !editor.value) editor.value = restore;
  }
}

function submitInput() {
  const text = editor.value;
  if (!text.trim()) return;
  if (!socket.live) {
    inlineError({ code: "DISCONNECTED", message: "Not connected to the server yet; your input is kept — press Enter again once reconnected" });
    return;
  }
  hist.add(text);
  editor.value = "";
  startExecution(executeMessage(text), text, undefined, { text });
}

$("#repl-form").addEventListener("submit", (e) => {
  e.preventDefault();
  submitInput();
  editor.focus();
});

async function cancel(block) {
  block.cancelBtn.disabled = true;
  editor.focus(); // the Cancel button hides itself: keep the keyboard in the input
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

/** Esc / Ctrl+C: cancel the newest running execution; true when there was one. */
function cancelRunning() {
  const block = log.running();
  if (!block) return false;
  cancel(block);
  return true;
}

function clearView() {
  log.clear();
  editor.focus();
}

$("#repl-clear").addEventListener("click", clearView);

// The same keys with the focus in the log (the editor handles its own, see editor.js).
$("#repl").addEventListener("keydown", (e) => {
  if (e.defaultPrevented || e.target.closest(".cm-editor")) return;
  const plain = !e.altKey && !e.metaKey && !e.shiftKey;
  if (e.key === "Escape" && plain && !e.ctrlKey) {
    if (cancelRunning()) editor.focus();
  } else if (plain && e.ctrlKey && e.key === "c" && document.getSelection().isCollapsed) {
    if (cancelRunning()) e.preventDefault();
  } else if (plain && e.ctrlKey && e.key === "l") {
    e.preventDefault();
    clearView();
  }
});

$(".repl-input .prompt").addEventListener("click", () => editor.focus());

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
  const argText = Object.keys(args).length ? ` ${JSON.stringify(args)}` : "";
  startExecution({ type: "run_file", session_id: SID, path, args, queue: true }, undefined, runForm, { text: `run ${path}${argText}`, file: true });
});

$("#close-session").addEventListener("click", (e) => {
  if (!window.confirm(closeQuestion({ id: SID }, { running: Boolean(log.running()) }))) return;
  const near = e.currentTarget.closest(".session-head");
  act(async () => renderSession(await post(`/sessions/${SID}/close`)), { button: e.currentTarget, context: "Close failed", near });
});

$("#fork-session").addEventListener("click", (e) => {
  const near = e.currentTarget.closest(".session-head");
  act(
    async () => {
      const fork = await post(`/sessions/${SID}/fork`);
      window.location.href = `/sessions/${fork.id}`;
    },
    { button: e.currentTarget, context: "Could not fork the session", near },
  );
});

$("#new-from-template").addEventListener("click", (e) => {
  const s = state.session;
  const near = e.currentTarget.closest(".session-head");
  act(
    async () => {
      const created = await post("/sessions", {
        template_id: s.vm_id,
        worktree_path: s.worktree_path,
        workspace_id: s.workspace_id,
        base_commit_oid: s.base_commit_oid,
      });
      window.location.href = `/sessions/${created.id}`;
    },
    { button: e.currentTarget, context: "Could not create the session", near },
  );
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
      log.keepBottom(() => log.accept(msg.events.map((ev) => (ev.execution_id ? ev : { ...ev, execution_id: msg.execution_id }))));
      break;
    case "execution": {
      const ex = msg.execution;
      log.ensure(ex);
      if (ex.kind === "repl" && ex.input && ex.started_at) hist.merge([{ text: ex.input, at: Date.parse(ex.started_at) }]);
      break;
    }
    case "session":
      renderSession(msg.session);
      break;
    default:
      break;
  }
}

async function onOpen() {
  state.subscription = null;
  const reply = await socket.request({ type: "subscribe", session_id: SID, after_id: log.cursor });
  state.subscription = reply.subscription;
  // What may have changed while we were away: the session's status and how running
  // executions ended (their events are being replayed by the subscription itself).
  renderSession(await get(`/sessions/${SID}`));
  const running = [...log.blocks.values()].filter((b) => b.running);
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

async function start() {
  try {
    renderSession(await get(`/sessions/${SID}`));
    const executions = await get(`/executions?session_id=${SID}&limit=${HISTORY_SEED}`);
    hist.merge(executions.filter((ex) => ex.kind === "repl" && ex.input).map((ex) => ({ text: ex.input, at: Date.parse(ex.started_at) })));
    if (executions.length > RECENT_EXECUTIONS) {
      log.el.prepend(
        h("p", { class: "repl-older" }, "Older executions are in the ", h("a", { href: `/sessions/${SID}/history` }, "history"), "."),
      );
    }
    for (const ex of executions.slice(0, RECENT_EXECUTIONS).reverse()) await log.ensure(ex).load();
    log.scrollToEnd();
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
  editor.focus();
}

start();
