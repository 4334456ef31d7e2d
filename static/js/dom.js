// DOM helpers, formatting and the page-wide banners (errors, connection state).

import { ApiError, get } from "./api.js";

/** h("a", {href, class}, child, ...) — strings become text nodes, never HTML. */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export const $ = (sel, root = document) => root.querySelector(sel);

export function mainData(name) {
  return document.getElementById("main").dataset[name];
}

// ------------------------------------------------------------------ formatting

export function fmtTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toLocaleString();
}

export function fmtClock(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (isNaN(d)) return iso;
  return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

export function fmtDuration(exec) {
  const ms = exec?.metrics?.wall_ms;
  if (typeof ms === "number") return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
  if (exec?.started_at && exec?.ended_at) {
    const d = new Date(exec.ended_at) - new Date(exec.started_at);
    return d < 1000 ? `${d} ms` : `${(d / 1000).toFixed(2)} s`;
  }
  return "—";
}

export function shortId(id) {
  return id ? id.slice(0, 8) : "";
}

export function badge(status) {
  return h("span", { class: "badge", dataset: { status } }, status);
}

export function setBadge(el, status) {
  el.textContent = status;
  el.dataset.status = status;
}

// ------------------------------------------------------------------ errors

/** Show an error (an ApiError's code and message, or any Error) at the top of the page. */
export function showError(err, context) {
  const area = document.getElementById("flash");
  const item = errorItem(err, context, (el) => el.remove());
  area.append(item);
  if (err instanceof ApiError && err.code === "NETWORK") watchServer();
  return item;
}

export function showNotice(message) {
  const area = document.getElementById("flash");
  const item = h("div", { class: "flash ok", role: "status" }, h("span", { class: "flash-msg" }, message));
  area.append(item);
  setTimeout(() => item.remove(), 4000);
}

export function clearErrors() {
  document.getElementById("flash").replaceChildren();
}

// ------------------------------------------------------------------ messages next to a form
//
// The outcome of an action is shown right after the form (or list, or button row) it came
// from, in one status slot per place: a new message replaces the previous one, so a failure
// clears an earlier "saved" and a success clears an earlier error. The slot is scrolled into
// view, so the message is seen even when the page-top flash area is off-screen.

/** The status slot of `anchor` (created on first use, right after it). */
function slotFor(anchor) {
  const next = anchor.nextElementSibling;
  if (next && next.classList.contains("form-status")) return next;
  const slot = h("div", { class: "form-status" });
  anchor.after(slot);
  return slot;
}

function reveal(el) {
  // "nearest" scrolls only when needed; CSS scroll-margin keeps it clear of the sticky top bar.
  el.scrollIntoView({ block: "nearest" });
}

/**
 * What the user can do about an error, where the message alone leaves it open. A library
 * missing from the server's cache is fetched by whoever runs the server (the server never
 * downloads code because a browser asked it to), so the page says exactly which command.
 */
function errorHelp(code, err) {
  if (code === "UNAUTHORIZED") return " — open this page with ?token=YOUR_TOKEN added to its address to sign in.";
  const name = err?.details?.name;
  if (code === "LIBRARY_UNAVAILABLE" && typeof name === "string") {
    const command = `vm-system libs download ${name}`;
    return h(
      "span",
      { class: "flash-help" },
      "What to do: on the machine the server runs on, run ",
      h("code", {}, command),
      " ",
      copyButton("copy", () => command, { title: "Copy the command" }),
      ", then try again; or take the library off the template.",
    );
  }
  return "";
}

function errorItem(err, context, onClose) {
  const code = err instanceof ApiError ? err.code : err?.code || err?.name || "Error";
  const message = err?.message || String(err);
  const item = h(
    "div",
    { class: "flash error", role: "alert" },
    h("strong", { class: "flash-code" }, code),
    h("span", { class: "flash-msg" }, context ? `${context}: ${message}` : message, errorHelp(code, err)),
    h("button", { type: "button", class: "flash-close", "aria-label": "Dismiss", onclick: () => onClose(item) }, "×"),
  );
  return item;
}

/** Show `err` next to `anchor` (replacing any earlier message there). */
export function showErrorAt(anchor, err, context) {
  if (!anchor) return showError(err, context);
  const slot = slotFor(anchor);
  const item = errorItem(err, context, () => slot.replaceChildren());
  slot.replaceChildren(item);
  reveal(slot);
  if (err instanceof ApiError && err.code === "NETWORK") watchServer();
  return item;
}

/** Show a success (or, with level "warn", a caution) message next to `anchor`. */
export function showNoticeAt(anchor, message, { level = "ok", timeout = level === "ok" ? 6000 : 0 } = {}) {
  if (!anchor) return showNotice(message);
  const slot = slotFor(anchor);
  const item = h("div", { class: `flash ${level}`, role: "status" }, h("span", { class: "flash-msg" }, message));
  if (level !== "ok") {
    item.append(h("button", { type: "button", class: "flash-close", "aria-label": "Dismiss", onclick: () => item.remove() }, "×"));
  }
  slot.replaceChildren(item);
  reveal(slot);
  if (timeout) setTimeout(() => item.remove(), timeout);
  return item;
}

/** Remove every message on the page: the ones next to forms and the ones at the top. */
export function clearMessages() {
  for (const slot of document.querySelectorAll(".form-status")) slot.replaceChildren();
  clearErrors();
}

/** Remove the message shown next to `anchor`, if any. */
export function clearAt(anchor) {
  const next = anchor?.nextElementSibling;
  if (next && next.classList.contains("form-status")) next.replaceChildren();
}

/**
 * Run an async UI action; on failure show its error next to `near` (or at the top of the page
 * without it). Disables `button` meanwhile. Messages left by earlier actions are cleared first.
 */
export async function act(fn, { button, context, near } = {}) {
  clearMessages(); // what earlier actions said is stale once the user does something else
  if (button) button.disabled = true;
  try {
    return await fn();
  } catch (err) {
    if (near) showErrorAt(near, err, context);
    else showError(err, context);
    return undefined;
  } finally {
    if (button) button.disabled = false;
  }
}

// ------------------------------------------------------------------ confirmations

/** The question asked before closing a session (closing cannot be undone). */
export function closeQuestion(session, { running = false } = {}) {
  return (
    `Close session ${shortId(session.id)}?\n\n` +
    (running ? "Code is running in it right now: that execution will be cancelled. " : "Any execution still running in it will be cancelled. ") +
    "The session's state (variables, loaded modules) is lost, and a closed session cannot be reopened."
  );
}

// ------------------------------------------------------------------ not found

/**
 * Replace the page's content with a "not found" message (no forms, nothing live).
 * `what` is e.g. "session", `back` a [href, label] pair.
 */
export function showNotFound(what, id, [href, label], detail) {
  const title = `${what[0].toUpperCase()}${what.slice(1)} not found`;
  document.title = `${title} · vm-system`;
  clearErrors();
  const main = document.getElementById("main");
  main.classList.remove("repl-main");
  main.replaceChildren(
    h(
      "section",
      { class: "card not-found", "aria-labelledby": "nf-h" },
      h("h1", { id: "nf-h" }, title),
      h("p", {}, `There is no ${what} with id `, h("code", {}, id), ". ", detail || "It may have been deleted, or the address is mistyped."),
      h("p", {}, h("a", { class: "button", href }, `← ${label}`)),
    ),
  );
  main.focus();
}

// ------------------------------------------------------------------ connection banner

export function setBanner(state, text) {
  const el = document.getElementById("conn-banner");
  if (!state) {
    el.hidden = true;
    el.textContent = "";
    delete el.dataset.state;
    return;
  }
  el.hidden = false;
  el.dataset.state = state;
  el.textContent = text;
}

let watching = false;
let onServerBack = null;

/** Pages without a socket register how to reload their data once the server answers again. */
export function onReconnect(fn) {
  onServerBack = fn;
}

/** Poll /health with backoff after a network failure, showing the banner until it answers. */
export function watchServer() {
  if (watching) return;
  watching = true;
  let delay = 500;
  const tick = async () => {
    setBanner("reconnecting", "Server unreachable — reconnecting…");
    try {
      await get("/health");
      watching = false;
      setBanner(null);
      clearErrors();
      if (onServerBack) onServerBack();
    } catch {
      delay = Math.min(delay * 2, 5000);
      setTimeout(tick, delay);
    }
  };
  setTimeout(tick, 0);
}

// ------------------------------------------------------------------ clipboard

/**
 * Copy `text` to the clipboard. The async Clipboard API needs a secure context (https or
 * localhost); elsewhere (a server on a LAN address over http) the older execCommand path works.
 */
export async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return;
  }
  const area = h("textarea", { class: "sr-only", readonly: true, "aria-hidden": "true" });
  area.value = text;
  document.body.append(area);
  area.select();
  try {
    if (!document.execCommand("copy")) throw new Error("the browser refused to copy");
  } finally {
    area.remove();
  }
}

/**
 * A small action button whose label is drawn by CSS (`data-label`), not text: copying a block
 * of output, or reading its text, never picks up the button's words.
 */
export function labelButton(label, { title, className = "" } = {}) {
  return h("button", { type: "button", class: `small label-btn ${className}`.trim(), title: title || label, "aria-label": label, dataset: { label } });
}

export function setButtonLabel(button, label) {
  button.dataset.label = label;
  button.setAttribute("aria-label", label);
}

/** A label button that copies what `getText()` returns and says so for a moment. */
export function copyButton(label, getText, { title } = {}) {
  const button = labelButton(label, { title, className: "copy-btn" });
  button.addEventListener("click", async () => {
    try {
      await copyText(getText());
      flashLabel(button, "copied ✓", label);
    } catch (err) {
      flashLabel(button, "copy failed", label);
      showError(err, "Could not copy");
    }
  });
  return button;
}

function flashLabel(button, text, label) {
  setButtonLabel(button, text);
  clearTimeout(button._restore);
  button._restore = setTimeout(() => setButtonLabel(button, label), 1500);
}
