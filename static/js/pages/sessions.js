// Sessions: the list with a status filter, the create form and close.

import { get, post } from "../api.js";
import { $, h, fmtTime, act, badge, shortId, onReconnect, showError, clearAt, closeQuestion } from "../dom.js";

const body = $("#sessions-body");
const filter = $("#status-filter");
const templateSelect = $("#session-template");
const tableWrap = body.closest(".table-wrap");

const params = new URLSearchParams(window.location.search);
if (params.get("status")) filter.value = params.get("status");

// The default view lists the sessions that can run code; crashed and closed ones (a failed
// "Create session" leaves a crashed row) are one filter away. A session closed from this page
// stays in view, marked closed, until the page is loaded again.
const ACTIVE = new Set(["ready", "starting"]);
const closedHere = new Set();

function wanted(s, status) {
  if (status === "any") return true;
  if (status) return s.status === status;
  return ACTIVE.has(s.status) || closedHere.has(s.id);
}

async function loadSessions() {
  const status = filter.value;
  const note = $("#sessions-hidden");
  try {
    const all = await get("/sessions");
    const sessions = all.filter((s) => wanted(s, status));
    const hidden = status ? 0 : all.length - sessions.length;
    note.hidden = hidden === 0;
    note.replaceChildren(
      `${hidden} crashed or closed session${hidden === 1 ? " is" : "s are"} not listed. `,
      h("button", { type: "button", class: "small", onclick: () => setFilter("any") }, "Show all sessions"),
    );
    if (sessions.length === 0) {
      const what = status === "any" ? "" : `${status || "active"} `;
      body.replaceChildren(h("tr", {}, h("td", { colspan: 6, class: "muted" }, all.length ? `No ${what}sessions.` : "No sessions yet. Create one above.")));
      return;
    }
    body.replaceChildren(...sessions.map(row));
  } catch (err) {
    body.replaceChildren(h("tr", {}, h("td", { colspan: 6, class: "muted" }, "Could not load sessions.")));
    showError(err, "Could not load sessions");
  }
}

function row(s) {
  const closeBtn =
    s.status === "closed"
      ? null
      : h(
          "button",
          {
            type: "button",
            class: "small danger",
            "aria-label": `Close session ${shortId(s.id)}`,
            onclick: (e) => {
              if (!window.confirm(closeQuestion(s))) return;
              act(
                async () => {
                  await post(`/sessions/${s.id}/close`);
                  closedHere.add(s.id);
                  clearAt(tableWrap);
                  await loadSessions();
                },
                { button: e.currentTarget, context: `Could not close session ${shortId(s.id)}`, near: tableWrap },
              );
            },
          },
          "Close",
        );
  return h(
    "tr",
    { dataset: { sessionId: s.id } },
    h("td", { dataset: { label: "Session" } }, h("a", { href: `/sessions/${s.id}`, class: "mono" }, shortId(s.id))),
    h("td", { dataset: { label: "Template" } }, h("a", { href: `/templates/${s.vm_id}` }, s.runtime_meta?.template_name || shortId(s.vm_id))),
    h("td", { dataset: { label: "Status" } }, badge(s.status)),
    h("td", { class: "mono wrap", dataset: { label: "Worktree" } }, s.worktree_path),
    h("td", { class: "hide-narrow", dataset: { label: "Created" } }, fmtTime(s.created_at)),
    h(
      "td",
      { class: "row-actions" },
      h("a", { href: `/sessions/${s.id}`, class: "button small" }, "Open"),
      h("a", { href: `/sessions/${s.id}/history`, class: "button small" }, "History"),
      closeBtn,
    ),
  );
}

async function loadTemplates() {
  try {
    const templates = await get("/templates");
    if (templates.length === 0) {
      templateSelect.replaceChildren(h("option", { value: "" }, "No templates — create one first"));
      return;
    }
    const wanted = params.get("template_id");
    templateSelect.replaceChildren(
      ...templates.map((t) => h("option", { value: t.id, selected: t.id === wanted }, t.name)),
    );
  } catch (err) {
    showError(err, "Could not load templates");
  }
}

function setFilter(value) {
  filter.value = value;
  const url = new URL(window.location.href);
  if (value) url.searchParams.set("status", value);
  else url.searchParams.delete("status");
  history.replaceState(null, "", url);
  loadSessions();
}

filter.addEventListener("change", () => setFilter(filter.value));

$("#create-session").addEventListener("submit", (e) => {
  e.preventDefault();
  const f = e.currentTarget;
  act(
    async () => {
      const s = await post("/sessions", {
        template_id: f.elements.template_id.value,
        worktree_path: f.elements.worktree_path.value.trim(),
        workspace_id: f.elements.workspace_id.value.trim(),
        base_commit_oid: f.elements.base_commit_oid.value.trim(),
      });
      window.location.href = `/sessions/${s.id}`;
    },
    { button: f.querySelector("button[type=submit]"), context: "Could not create the session", near: f },
  ).then(loadSessions); // a failed start leaves a crashed row: the count of hidden ones changes
});

onReconnect(() => {
  loadTemplates();
  loadSessions();
});
loadTemplates();
loadSessions();
