// The REPL log: one block per execution, created for any execution of the session (typed here,
// in another tab, in the CLI, or run by the server itself), keyed by execution id.
//
// Every event, from REST or the socket, enters through `Log.accept`. `seen` (event ids) and each
// block's `lastSeq` make sure a replayed or doubly delivered event is never shown twice; an
// event after a gap (never expected) waits while REST fills the gap.
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
    if (ex.kind === "run_file" && ex.path) {
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

  setInput(text, { file = false } = {}) {
    if (this.source === text) return;
    this.source = file ? null : text;
    this.inputEl.classList.toggle("file", file);
    this.inputEl.replaceChildren(...(file ? [text] : highlightedNodes(text)));
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
    this.renderRun(run);
    if (this.pending.length) this.backfill();
  }

  /** A contiguous run of events; console lines that would be dropped at once are never built. */
  renderRun(run) {
    let consoleLeft = 0;
    for (const ev of run) if (ev.type === "console") consoleLeft += 1;
    for (const ev of run) {
      this.lastSeq = ev.seq;
      if (ev.type === "console") {
        consoleLeft -= 1;
        this.lineCount += 1;
        if (consoleLeft >= MAX_LINES) {
          this.hide(1);
          continue;
        }
      }
      this.render(ev);
    }
  }

  render(ev) {
    if (ev.type === "input_echo") {
      if (this.source == null && !this.inputEl.textContent) this.setInput(ev.payload.text ?? "");
      return;
    }
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

  /** The block of an execution, created (and appended) on first sight. */
  ensure(execution) {
    let block = this.blocks.get(execution.id);
    if (block) {
      if (Object.keys(execution).length > 1) block.update(execution);
      return block;
    }
    block = new Block(execution, this);
    this.blocks.set(execution.id, block);
    this.el.querySelector(".repl-empty")?.remove();
    this.keepBottom(() => this.el.append(block.el));
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

  /** Hide every block shown so far (nothing is deleted: the history keeps them all). */
  clear() {
    for (const block of this.blocks.values()) {
      if (block.running) block.clearOutput();
      else block.el.remove();
    }
    this.el.querySelectorAll(":scope > :not(.exec)").forEach((el) => el.remove());
    this.el.prepend(h("p", { class: "repl-cleared" }, "Console cleared. Earlier executions are in the ", h("a", { href: this.historyHref }, "history"), "."));
  }
}
