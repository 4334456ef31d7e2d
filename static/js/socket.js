// One WebSocket that reconnects with backoff. Requests carry an id and resolve on the reply
// with the same reply_to; subscription traffic goes to onMessage. After every (re)connect
// onOpen runs before the connection counts as live, so the page can resubscribe from its
// cursor; the banner says "reconnecting…" until it has.

import { wsUrl } from "./api.js";
import { setBanner } from "./dom.js";

const BASE_DELAY_MS = 250;
const MAX_DELAY_MS = 5000;
// Replies that say how a request is going without ending it (API.md §12: a queued execution).
const INTERIM = new Set(["queued"]);

export class SocketError extends Error {
  constructor(code, message, details) {
    super(message);
    this.name = "SocketError";
    this.code = code;
    this.details = details;
  }
}

export class LiveSocket {
  constructor({ onOpen, onMessage, onDown, onLive }) {
    this.onOpen = onOpen;
    this.onMessage = onMessage;
    this.onDown = onDown || (() => {});
    this.onLive = onLive || (() => {});
    this.ws = null;
    this.live = false;
    this.nextId = 1;
    this.pending = new Map();
    this.attempt = 0;
    this.timer = null;
    this.stopped = false;
    this.lastError = null;
  }

  connect() {
    clearTimeout(this.timer);
    this.timer = null;
    const ws = new WebSocket(wsUrl());
    this.ws = ws;
    ws.onopen = async () => {
      try {
        await this.onOpen();
        if (this.ws !== ws) return;
        this.attempt = 0;
        this.live = true;
        setBanner(null);
        this.onLive();
      } catch (err) {
        // Resubscribing failed (e.g. the server is still starting): try again from scratch,
        // and say why in the banner rather than only "reconnecting".
        this.lastError = err.message;
        ws.close(4000, "resubscribe failed");
      }
    };
    ws.onmessage = (ev) => {
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (msg.reply_to !== undefined && msg.reply_to !== null && this.pending.has(msg.reply_to)) {
        const { resolve, reject, onInterim } = this.pending.get(msg.reply_to);
        if (INTERIM.has(msg.type)) {
          // A progress note (e.g. `queued` before `accepted`): the request is still open.
          onInterim?.(msg);
          this.onMessage(msg);
          return;
        }
        this.pending.delete(msg.reply_to);
        if (msg.type === "error") reject(new SocketError(msg.error.code, msg.error.message, msg.error.details));
        else resolve(msg);
      }
      this.onMessage(msg);
    };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.live = false;
      for (const { reject } of this.pending.values()) {
        reject(new SocketError("DISCONNECTED", "The connection to the server was lost before it answered"));
      }
      this.pending.clear();
      this.onDown();
      if (!this.stopped) this.scheduleReconnect();
    };
  }

  scheduleReconnect() {
    const delay = Math.min(MAX_DELAY_MS, BASE_DELAY_MS * 2 ** this.attempt) * (0.75 + Math.random() * 0.5);
    this.attempt += 1;
    const secs = delay >= 1000 ? ` (retrying in ${(delay / 1000).toFixed(1)} s)` : "";
    const why = this.lastError ? ` Last error: ${this.lastError}` : "";
    this.lastError = null;
    setBanner("reconnecting", `Connection to the server lost — reconnecting…${secs}${why}`);
    this.timer = setTimeout(() => this.connect(), delay);
  }

  /**
   * Send a request; resolves with the reply, rejects with a SocketError. Interim replies
   * (types in INTERIM) go to `onInterim` and leave the request open.
   */
  request(msg, { onInterim } = {}) {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      return Promise.reject(new SocketError("DISCONNECTED", "Not connected to the server; reconnecting, try again in a moment"));
    }
    const id = `c${this.nextId++}`;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, onInterim });
      ws.send(JSON.stringify({ ...msg, id }));
    });
  }

  /** Fire-and-forget (replies are ignored). */
  send(msg) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
  }

  /** Close the socket as a network drop would (used by the tests and the "reconnect" path). */
  drop() {
    if (this.ws) this.ws.close(4001, "dropped by the client");
  }
}
