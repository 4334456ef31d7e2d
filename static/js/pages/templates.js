// Templates: the list and the create form.

import { get, post } from "../api.js";
import { $, h, fmtTime, act, onReconnect, showError } from "../dom.js";

const body = $("#templates-body");

async function load() {
  try {
    const templates = await get("/templates");
    if (templates.length === 0) {
      body.replaceChildren(h("tr", {}, h("td", { colspan: 5, class: "muted" }, "No templates yet. Create one above.")));
      return;
    }
    body.replaceChildren(
      ...templates.map((t) =>
        h(
          "tr",
          {},
          h("td", {}, h("a", { href: `/templates/${t.id}` }, t.name)),
          h("td", {}, t.engine),
          h("td", {}, t.exposed_modules.join(", ") || h("span", { class: "muted" }, "none")),
          h("td", {}, t.libraries.join(", ") || h("span", { class: "muted" }, "none")),
          h("td", { class: "hide-narrow" }, fmtTime(t.created_at)),
        ),
      ),
    );
  } catch (err) {
    body.replaceChildren(h("tr", {}, h("td", { colspan: 5, class: "muted" }, "Could not load templates.")));
    showError(err, "Could not load templates");
  }
}

$("#create-template").addEventListener("submit", (e) => {
  e.preventDefault();
  const form = e.currentTarget;
  const button = form.querySelector("button[type=submit]");
  act(
    async () => {
      const tpl = await post("/templates", { name: form.elements.name.value.trim(), engine: form.elements.engine.value });
      window.location.href = `/templates/${tpl.id}`;
    },
    { button, context: "Could not create the template", near: form },
  );
});

onReconnect(load);
load();
