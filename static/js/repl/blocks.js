// The REPL log: one block per execution, created for any execution of the session (typed here,
// in another tab, in the CLI, or run by the server itself), keyed by execution id.
//
// Every event, from REST or the socket, enters through `Log.accept`. `seen` (event ids) and each
// block's `lastSeq` make sure a replayed or doubly delivered event is never shown twice; an
// event after a gap (never expected) waits while REST fills the gap.
//
// A running background execution (API.md §12: timers left by earlier inputs) is pinned to the
// bottom of the log, where its output stays in view: new blocks go above it until it ends. Its
// Cancel button says "Stop timers" (a cancel clears the timers). `console.clear()` (a console
// event of level "clear") hides what was shown before it, as the Clear button does. An input
// the server queues behind a running one is shown as a "queued" entry until it starts.
//
// Floods keep the newest lines: a block holds at most `MAX_LINES` console lines (a ring
// buffer: the oldest line leaves the DOM when a new one comes), and says at its top how many
// earlier lines are hidden, with a link to the full log. A batch of events skips building the
// lines that would be dropped before it ends.

import { get } from "../api.js";
import { h, fmtClock, fmtDuration, fmtTime, setBadge, shortId, showError, copyButton } from "../dom.js";
import { renderEventLine } from "../render.js";
import { highlightedNodes } from "../editor.js";

export const MAX_LINES = 5000;
const PAGE = 5000;

const isClear = (ev) => ev.type === "console" && ev.payload?.level === "clear";

function plural(n, word) {
  return `${n.toLocaleString("en-US")} ${word}${n === 1 ? "" : "s"}`;
}

export class Block {
  constructor(execution, log) {
    this.id = execution.id;
    this.log = log;
    this.execution = { id: execution.id };
    this.lastSeq = 0;
    this.hidden = 0; // console lines dropped from the top
    this.lineNodes = []; // console lines in the DOM, oldest first (from lineHead on)
    this.lineHead = 0;
    this.lineCount = 0; // console lines seen in all
    this.backfilling = false;
    this.pending = [];
    this.seenAt = Date.now();
    this.source = null;

    this.kindEl = h("span", { class: "kind" }, "repl");
    this.statusEl = h("span", { class: "badge" });
    this.durationEl = h("span", { class: "duration" });
    this.timeEl = h("time", { class: "exec-time" });
    this.cancelBtn = h("button", { type: "button", class: "cancel small", onclick: () => log.hooks.cancel(this) }, "Cancel");
    this.inputEl = h("pre", { class: "exec-input" });
    this.hiddenEl = h("div", { class: "line more", hidden: true });
    this.outEl = h("div", { class: "exec-out" });
    this.el = h(
      "article",
      { class: "exec", dataset: { executionId: this.id, kind: "repl" }, "aria-label": `Execution ${shortId(this.id)}` },
      h(
        "div",
        { class: "exec-row" },
        this.inputEl,
        h(
          "header",
          { class: "exec-head" },
          this.kindEl,
          this.statusEl,
          this.durationEl,
          this.timeEl,
          h(
            "span",
            { class: "exec-actions" },
            this.cancelBtn,
            copyButton("copy input", () => this.source ?? this.inputEl.textContent, { title: "Copy this input" }),
            h("a", { class: "log-link", href: `/executions/${this.id}` }, "full log"),
          ),
        ),
      ),
      this.hiddenEl,
      this.outEl,
    );
    this.update(execution);
  }

  get running() {
    return (this.execution.status || "running") === "running";
  }

  update(execution) {
    // A record read before the end (e.g. the `accepted` reply) must not undo a later end.
    if (execution.status === "running" && this.execution.status && this.execution.status !== "running") return;
    const wasRunning = this.execution.status === "running";
    this.execution = { ...this.execution, ...execution };
    const ex = this.execution;
    if (ex.kind) {
      this.kindEl.textContent = ex.kind;
      this.el.dataset.kind = ex.kind;
    }
    if (ex.kind === "background") {
      this.setInput("timers left running by earlier inputs", { note: true });
      this.cancelBtn.textContent = "Stop timers";
      this.cancelBtn.title = "Cancel the background execution: clears every timer still pending";
      // Its output scrolls inside the block: reachable from the keyboard too.
      Object.assign(this.outEl, { tabIndex: 0 });
      this.outEl.setAttribute("role", "region");
      this.outEl.setAttribute("aria-label", "Output of the background timers");
      if ((ex.status || "running") === "running") this.log.pin(this);
      else this.log.unpin(this);
    } else if (ex.kind === "run_file" && ex.path) {
      const args = ex.args && Object.keys(ex.args).length ? ` ${JSON.stringify(ex.args)}` : "";
      this.setInput(`run ${ex.path}${args}`, { file: true });
    } else if (ex.kind === "startup" && ex.path) {
      this.setInput(`startup ${ex.path}`, { file: true });
    } else if (ex.input != null) {
      this.setInput(ex.input);
    }
    if (ex.started_at) {
      const when = `Started ${fmtTime(ex.started_at)}`;
      this.timeEl.dateTime = ex.started_at;
      this.timeEl.textContent = fmtClock(ex.started_at).slice(0, 8);
      this.timeEl.title = when;
      this.inputEl.title = when;
    }
    const status = ex.status || "running";
    setBadge(this.statusEl, status);
    this.el.dataset.status = status;
    this.cancelBtn.hidden = status !== "running";
    if (status !== "running") {
      this.durationEl.textContent = fmtDuration(ex);
      if (wasRunning) this.log.hooks.ended(this);
    }
  }

  /** The input row: code (highlighted), a file run, or a note (a background execution). */
  setInput(text, { file = false, note = false } = {}) {
    const plain = file || note;
    if (plain ? this.inputEl.textContent === text && this.source === null : this.source === text) return;
    this.source = plain ? null : text;
    this.inputEl.classList.toggle("file", file);
    this.inputEl.classList.toggle("note", note);
    this.inputEl.replaceChildren(...(plain ? [text] : highlightedNodes(text)));
  }

  tick() {
    if (!this.running || !this.execution.status) return;
    const started = Date.parse(this.execution.started_at);
    const ms = Math.max(0, Date.now() - (isNaN(started) ? this.seenAt : Math.min(started, Date.now())));
    this.durationEl.textContent = `${(ms / 1000).toFixed(1)} s…`;
  }

  /** Events of this block (any order, duplicates allowed): shown in seq order, gaps filled. */
  apply(events) {
    for (const ev of events) if (ev.seq > this.lastSeq) this.pending.push(ev);
    if (this.pending.length === 0) return;
    this.pending.sort((a, b) => a.seq - b.seq);
    const run = [];
    let next = this.lastSeq + 1;
    while (this.pending.length && this.pending[0].seq <= next) {
      const ev = this.pending.shift();
      if (ev.seq === next) {
        run.push(ev);
        next += 1;
      }
    }
    // The background block scrolls inside: it keeps showing its newest line unless scrolled up.
    const out = this.outEl;
    const tail = out.scrollHeight - out.scrollTop - out.clientHeight < 24;
    this.renderRun(run);
    if (tail && this.execution.kind === "background") out.scrollTop = out.scrollHeight;
    if (this.pending.length) this.backfill();
  }

  /**
   * A contiguous run of events; console lines that would be dropped at once are never built,
   * nor anything a console.clear() later in the run would clear.
   */
  renderRun(run) {
    let lastClear = -1;
    run.forEach((ev, i) => {
      if (isClear(ev)) lastClear = i;
    });
    let consoleLeft = 0;
    for (const ev of run.slice(lastClear + 1)) if (ev.type === "console") consoleLeft += 1;
    run.forEach((ev, i) => {
      this.lastSeq = ev.seq;
      if (i < lastClear && ev.type !== "input_echo") {
        if (ev.type === "console") this.lineCount += 1;
        return;
      }
      if (ev.type === "console" && i > lastClear) {
        consoleLeft -= 1;
        this.lineCount += 1;
        if (consoleLeft >= MAX_LINES) {
          this.hide(1);
          return;
        }
      }
      this.render(ev);
    });
  }

  render(ev) {
    if (ev.type === "input_echo") {
      if (this.source == null && !this.inputEl.textContent) this.setInput(ev.payload.text ?? "");
      return;
    }
    if (isClear(ev)) this.log.clear({ by: this });
    const line = renderEventLine(ev, { source: this.source });
    if (!line) return;
    this.outEl.append(line);
    if (ev.type !== "console") return;
    this.lineNodes.push(line);
    if (this.lineNodes.length - this.lineHead > MAX_LINES) {
      this.lineNodes[this.lineHead].remove();
      this.lineNodes[this.lineHead] = null;
      this.lineHead += 1;
      this.hide(1);
      if (this.lineHead > 4096) {
        this.lineNodes = this.lineNodes.slice(this.lineHead);
        this.lineHead = 0;
      }
    }
  }

  /** `n` more lines from the top are not shown: say so above the lines. */
  hide(n) {
    this.hidden += n;
    this.hiddenEl.hidden = false;
    this.hiddenEl.replaceChildren(
      `… first ${plural(this.hidden, "line")} hidden — `,
      h("a", { href: `/executions/${this.id}` }, "open the full log"),
    );
  }

  /** Drop what is shown so far (the Clear action); the block keeps its header. */
  clearOutput() {
    this.outEl.replaceChildren();
    this.lineNodes = [];
    this.lineHead = 0;
    this.hidden = 0;
    this.hiddenEl.hidden = true;
  }

  backfill() {
    if (this.backfilling) return;
    this.backfilling = true;
    (async () => {
      try {
        while (this.pending.length && this.pending[0].seq > this.lastSeq + 1) {
          const events = await get(`/executions/${this.id}/events?after_seq=${this.lastSeq}&limit=${PAGE}`);
          this.log.keepBottom(() => this.log.accept(events));
          if (events.length === 0) break;
        }
      } catch (err) {
        showError(err, "Could not load missing output");
      } finally {
        this.backfilling = false;
        this.log.keepBottom(() => this.apply([]));
      }
    })();
  }

  /**
   * Read this block's stored events over REST (page load). An ended execution with more lines
   * than a block keeps is read from its tail only: its `event_count` says where that starts.
   */
  async load() {
    const ex = this.execution;
    const total = ex.metrics?.event_count;
    if (!this.running && typeof total === "number" && total > MAX_LINES + 2) {
      const from = total - MAX_LINES - 1; // the last lines and the outcome
      this.hide(from - (ex.kind === "repl" ? 1 : 0)); // seq 1 of a REPL input is its echo
      this.lastSeq = from;
    }
    for (;;) {
      const events = await get(`/executions/${this.id}/events?after_seq=${this.lastSeq}&limit=${PAGE}`);
      this.log.accept(events);
      if (events.length < PAGE) break;
    }
  }
}

/** The log element and its blocks. `hooks`: cancel(block), ended(block). */
export class Log {
  constructor(el, { hooks, historyHref }) {
    this.el = el;
    this.hooks = hooks;
    this.historyHref = historyHref;
    this.blocks = new Map();
    this.pinned = null; // the running background block, kept at the bottom
    this.seen = new Set();
    this.cursor = 0; // the highest event id applied
    setInterval(() => {
      for (const b of this.blocks.values()) b.tick();
    }, 200);
  }

  nearBottom() {
    return this.el.scrollHeight - this.el.scrollTop - this.el.clientHeight < 80;
  }

  keepBottom(fn) {
    const stick = this.nearBottom();
    fn();
    if (stick) this.scrollToEnd();
  }

  scrollToEnd() {
    this.el.scrollTop = this.el.scrollHeight;
  }

  /** Add `el` at the end of the log, above the pinned background block. */
  add(el) {
    this.el.querySelector(".repl-empty")?.remove();
    this.keepBottom(() => {
      if (this.pinned && this.pinned.el.parentNode === this.el && this.pinned.el !== el) this.el.insertBefore(el, this.pinned.el);
      else this.el.append(el);
    });
  }

  /** Keep a running background block at the bottom (moved there now, new blocks above it). */
  pin(block) {
    if (this.pinned === block) return;
    this.pinned = block;
    if (block.el.parentNode === this.el) this.keepBottom(() => this.el.append(block.el));
  }

  unpin(block) {
    if (this.pinned === block) this.pinned = null;
  }

  /** An input the server has queued behind a running execution, until it starts. */
  queued(text, { file = false } = {}) {
    const el = h(
      "article",
      { class: "exec queued", dataset: { status: "queued", kind: file ? "run_file" : "repl" }, "aria-label": "Queued input" },
      h(
        "div",
        { class: "exec-row" },
        h("pre", { class: `exec-input${file ? " file" : ""}` }, file ? text : highlightedNodes(text)),
        h("header", { class: "exec-head" }, h("span", { class: "badge", dataset: { status: "queued" }, title: "Runs when the session is free" }, "queued")),
      ),
    );
    this.add(el);
    return el;
  }

  /**
   * The block of an execution, created (and appended) on first sight; `replacing` (a queued
   * entry) is where it goes.
   */
  ensure(execution, { replacing } = {}) {
    let block = this.blocks.get(execution.id);
    if (block) {
      if (Object.keys(execution).length > 1) block.update(execution);
      if (replacing?.isConnected) replacing.replaceWith(block.el);
      return block;
    }
    block = new Block(execution, this);
    this.blocks.set(execution.id, block);
    if (replacing?.isConnected) {
      this.el.querySelector(".repl-empty")?.remove();
      replacing.replaceWith(block.el);
    } else if (!block.el.parentNode) {
      this.add(block.el);
    }
    if (!execution.started_at) {
      // Started elsewhere (CLI, another tab, the server) and first heard of through its events.
      get(`/executions/${execution.id}`).then((ex) => block.update(ex), (err) => showError(err));
    }
    return block;
  }

  /** Events from REST or the socket, of any executions: each shown once, in order. */
  accept(events) {
    const byBlock = new Map();
    for (const ev of events) {
      if (this.seen.has(ev.id)) continue;
      this.seen.add(ev.id);
      if (ev.id > this.cursor) this.cursor = ev.id;
      const block = this.ensure({ id: ev.execution_id });
      if (!byBlock.has(block)) byBlock.set(block, []);
      byBlock.get(block).push(ev);
    }
    for (const [block, evs] of byBlock) block.apply(evs);
  }

  /** The newest execution still running that was started by a person (not a background one). */
  running() {
    const list = [...this.blocks.values()].filter((b) => b.running && b.execution.status && b.execution.kind !== "background");
    return list[list.length - 1] || null;
  }

  /**
   * Hide every block shown so far (nothing is deleted: the history keeps them all). Running
   * blocks, and `by` (the block whose console.clear() asked for it), keep their header.
   */
  clear({ by } = {}) {
    for (const block of this.blocks.values()) {
      if (block.running || block === by) block.clearOutput();
      else block.el.remove();
    }
    this.el.querySelectorAll(":scope > :not(.exec)").forEach((el) => el.remove());
    const who = by ? ["Console cleared by ", h("code", {}, "console.clear()"), "."] : ["Console cleared."];
    this.el.prepend(h("p", { class: "repl-cleared" }, ...who, " Earlier executions are in the ", h("a", { href: this.historyHref }, "history"), "."));
  }
}
