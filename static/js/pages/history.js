// History: every execution of a session, newest first, each linking to its full event log.

import { get } from "../api.js";
import { $, h, mainData, fmtTime, fmtDuration, badge, shortId, onReconnect, showError, showNotFound } from "../dom.js";

const SID = mainData("sessionId");
const body = $("#history-body");
$("#session-link").textContent = `session ${shortId(SID)}`;

function summary(ex) {
  if (ex.kind === "repl") return ex.input ?? "";
  const args = ex.args && Object.keys(ex.args).length ? ` ${JSON.stringify(ex.args)}` : "";
  return `${ex.path ?? ""}${args}`;
}

let gone = false;

async function load() {
  if (gone) return;
  try {
    // The execution list of an unknown session is just empty: ask for the session itself.
    await get(`/sessions/${SID}`);
    const executions = await get(`/executions?session_id=${SID}&limit=1000`);
    if (executions.length === 0) {
      body.replaceChildren(h("tr", {}, h("td", { colspan: 6, class: "muted" }, "This session has not run anything yet.")));
      return;
    }
    body.replaceChildren(
      ...executions.map((ex) =>
        h(
          "tr",
          { dataset: { executionId: ex.id } },
          h("td", { dataset: { label: "Started" } }, h("a", { href: `/executions/${ex.id}` }, fmtTime(ex.started_at))),
          h("td", { dataset: { label: "Kind" } }, ex.kind),
          h(
            "td",
            { class: "code-cell", dataset: { label: ex.kind === "repl" ? "Input" : "File" } },
            h("a", { href: `/executions/${ex.id}`, class: "mono code-summary" }, truncate(summary(ex), 160)),
          ),
          h("td", { dataset: { label: "Status" } }, badge(ex.status)),
          h("td", { dataset: { label: "Duration" } }, ex.status === "running" ? "running…" : fmtDuration(ex)),
          h("td", { dataset: { label: "Events" } }, ex.metrics?.event_count ?? "—"),
        ),
      ),
    );
  } catch (err) {
    if (err.status === 404) {
      gone = true;
      showNotFound("session", SID, ["/sessions", "All sessions"]);
      return;
    }
    body.replaceChildren(h("tr", {}, h("td", { colspan: 6, class: "muted" }, "Could not load the history.")));
    showError(err, "Could not load the history");
  }
}

function truncate(text, n) {
  return text.length > n ? `${text.slice(0, n)}…` : text;
}

onReconnect(load);
load();
