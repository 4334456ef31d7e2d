// One template: rename, limits, runtime and resolver settings (PATCH), native modules,
// libraries, capabilities and startup files; and starting a session from it.

import { get, post, patch, del } from "../api.js";
import { $, h, mainData, fmtTime, act, showError, showNoticeAt, clearAt, showNotFound, onReconnect } from "../dom.js";

const TID = mainData("templateId");
const base = `/templates/${TID}`;
const LIMITS = ["cpu_ms", "wall_ms", "mem_mb", "max_events", "max_output_kb"];
let detail = null;

function render(d) {
  detail = d;
  const t = d.template;
  $("#template-title").textContent = t.name;
  document.title = `${t.name} · Templates · vm-system`;
  $("#template-meta").textContent = `${t.engine} · created ${fmtTime(t.created_at)} · updated ${fmtTime(t.updated_at)}`;
  $("#template-name").value = t.name;
  for (const k of LIMITS) $(`#limit-${k}`).value = d.settings.limits[k];
  $("#runtime-esm").checked = d.settings.runtime.esm;
  $("#runtime-strict").checked = d.settings.runtime.strict;
  $("#runtime-console").checked = d.settings.runtime.console;
  $("#resolver-roots").value = d.settings.resolver.roots.join(", ");
  $("#resolver-extensions").value = d.settings.resolver.extensions.join(", ");
  $("#resolver-abs").checked = d.settings.resolver.allow_absolute_repo_imports;
  renderCapabilities(d.capabilities);
  renderStartup(d.startup_files);
}

function renderCapabilities(caps) {
  const body = $("#caps-body");
  if (caps.length === 0) {
    body.replaceChildren(h("tr", {}, h("td", { colspan: 5, class: "muted" }, "No capabilities.")));
    return;
  }
  body.replaceChildren(
    ...caps.map((c) =>
      h(
        "tr",
        {},
        h("td", {}, c.kind),
        h("td", { class: "mono" }, c.name),
        h("td", {}, c.enabled ? "yes" : "no"),
        h("td", {}, h("code", {}, JSON.stringify(c.config))),
        h(
          "td",
          { class: "row-actions" },
          h(
            "button",
            {
              type: "button",
              class: "small danger",
              "aria-label": `Delete capability ${c.kind} ${c.name}`,
              onclick: (e) =>
                act(async () => {
                  await del(`${base}/capabilities/${c.id}`);
                  await reload();
                  clearAt($("#cap-form"));
                }, { button: e.currentTarget, context: "Could not delete the capability", near: $("#cap-form") }),
            },
            "Delete",
          ),
        ),
      ),
    ),
  );
}

function renderStartup(files) {
  const body = $("#startup-body");
  if (files.length === 0) {
    body.replaceChildren(h("tr", {}, h("td", { colspan: 4, class: "muted" }, "No startup files.")));
    return;
  }
  body.replaceChildren(
    ...files.map((f) =>
      h(
        "tr",
        {},
        h("td", { class: "num" }, f.order_index),
        h("td", { class: "mono" }, f.path),
        h("td", {}, f.mode),
        h(
          "td",
          { class: "row-actions" },
          h(
            "button",
            {
              type: "button",
              class: "small danger",
              "aria-label": `Delete startup file ${f.path}`,
              onclick: (e) =>
                act(async () => {
                  await del(`${base}/startup-files/${f.id}`);
                  await reload();
                  clearAt($("#startup-form"));
                }, { button: e.currentTarget, context: "Could not delete the startup file", near: $("#startup-form") }),
            },
            "Delete",
          ),
        ),
      ),
    ),
  );
}

/** Why an enabled library that is not in the server's cache will break new sessions. */
function uncachedWarning(name, lead = `${name} is not cached`) {
  return [
    `${lead} on the server: sessions from this template will fail to start with `,
    h("code", {}, "LIBRARY_UNAVAILABLE"),
    " until you run ",
    h("code", {}, `vm-system libs download ${name}`),
    ".",
  ];
}

/**
 * A catalog as a list of checkboxes; toggling one adds or removes it through the API.
 * `warnFor(item)` (optional) returns a caution to show while the item is enabled.
 */
function renderOptions(listEl, catalog, enabled, kind, describe, warnFor) {
  if (catalog.length === 0) {
    listEl.replaceChildren(h("li", { class: "muted" }, `The server offers no ${kind}.`));
    return;
  }
  listEl.replaceChildren(
    ...catalog.map((item) => {
      const id = `${kind}-${item.name}`;
      const box = h("input", { type: "checkbox", id, checked: enabled.includes(item.name) });
      const warning = warnFor?.(item);
      const note = warning ? h("p", { class: "opt-warn", id: `${id}-warn` }, warning) : null;
      if (note) {
        note.hidden = !box.checked;
        box.setAttribute("aria-describedby", note.id);
      }
      box.addEventListener("change", () =>
        act(
          async () => {
            try {
              if (box.checked) await post(`${base}/${kind}`, { name: item.name });
              else await del(`${base}/${kind}/${encodeURIComponent(item.name)}`);
            } catch (err) {
              box.checked = !box.checked;
              throw err;
            }
            if (note) note.hidden = !box.checked;
            if (box.checked && warning) {
              showNoticeAt(listEl, uncachedWarning(item.name, `${item.name} enabled, but it is not cached`), { level: "warn" });
            } else {
              showNoticeAt(listEl, `${item.name} ${box.checked ? "enabled" : "removed"}.`);
            }
          },
          { context: `Could not update ${kind}`, near: listEl },
        ),
      );
      return h(
        "li",
        {},
        box,
        h("div", { class: "opt-body" }, h("label", { for: id }, h("span", { class: "opt-name mono" }, item.name), describe(item)), note),
      );
    }),
  );
}

async function loadCatalogs(d) {
  const [mods, libs] = await Promise.all([get("/modules"), get("/libraries")]);
  renderOptions($("#modules-list"), mods, d.template.exposed_modules, "modules", (m) =>
    h("span", { class: "opt-desc" }, m.description, m.functions?.length ? h("span", { class: "hint" }, ` — ${m.functions.join(", ")}`) : null),
  );
  renderOptions(
    $("#libraries-list"),
    libs,
    d.template.libraries,
    "libraries",
    (l) =>
      h(
        "span",
        { class: "opt-desc" },
        l.description,
        l.global ? h("span", { class: "hint" }, ` — global ${l.global}`) : null,
        " ",
        h("span", { class: `pill ${l.cached ? "ok" : "warn"}` }, l.cached ? "cached" : "not cached"),
      ),
    (l) => (l.cached ? null : uncachedWarning(l.name)),
  );
}

async function reload() {
  const d = await get(base);
  render(d);
  return d;
}

let gone = false;

async function start() {
  if (gone) return;
  try {
    const d = await reload();
    await loadCatalogs(d);
  } catch (err) {
    if (err.status === 404 && !detail) {
      // A well-formed id the server does not know: no forms to fill in for it.
      gone = true;
      showNotFound("template", TID, ["/templates", "All templates"]);
      return;
    }
    showError(err, "Could not load the template");
  }
}

// ------------------------------------------------------------------ forms

/**
 * Submit handler for the form `sel`: errors and the `done` message (if any) are shown next
 * to the form, each replacing the other.
 */
function onSubmit(sel, fn, context, done) {
  $(sel).addEventListener("submit", (e) => {
    e.preventDefault();
    const form = e.currentTarget;
    act(
      async () => {
        await fn(form);
        if (done) showNoticeAt(form, done);
        else clearAt(form);
      },
      { button: form.querySelector("button[type=submit]"), context, near: form },
    );
  });
}

const list = (s) => s.split(",").map((x) => x.trim()).filter(Boolean);

onSubmit("#rename-template", async (f) => {
  render(await patch(base, { name: f.elements.name.value.trim() }));
}, "Could not rename the template", "Template renamed.");

onSubmit("#limits-form", async (f) => {
  const limits = {};
  for (const k of LIMITS) limits[k] = Number(f.elements[k].value);
  render(await patch(base, { settings: { limits } }));
}, "Could not save the limits", "Limits saved.");

onSubmit("#runtime-form", async (f) => {
  const settings = {
    runtime: { esm: f.elements.esm.checked, strict: f.elements.strict.checked, console: f.elements.console.checked },
    resolver: { roots: list(f.elements.roots.value), extensions: list(f.elements.extensions.value), allow_absolute_repo_imports: f.elements.allow_absolute_repo_imports.checked },
  };
  render(await patch(base, { settings }));
}, "Could not save the runtime settings", "Runtime settings saved.");

onSubmit("#cap-form", async (f) => {
  let config;
  try {
    config = JSON.parse(f.elements.config.value.trim() || "{}");
    if (config === null || typeof config !== "object" || Array.isArray(config)) throw new Error("not an object");
  } catch (err) {
    throw Object.assign(new Error(`Config must be a JSON object, e.g. {"path": "/data"} (${err.message})`), { name: "INVALID_CONFIG" });
  }
  await post(`${base}/capabilities`, { kind: f.elements.kind.value, name: f.elements.name.value.trim(), enabled: f.elements.enabled.checked, config });
  f.elements.name.value = "";
  f.elements.config.value = "{}";
  await reload();
}, "Could not add the capability", "Capability added.");

onSubmit("#startup-form", async (f) => {
  await post(`${base}/startup-files`, { path: f.elements.path.value.trim(), order_index: Number(f.elements.order_index.value || 0), mode: f.elements.mode.value });
  f.elements.path.value = "";
  await reload();
}, "Could not add the startup file", "Startup file added.");

onSubmit("#create-session", async (f) => {
  const s = await post("/sessions", {
    template_id: TID,
    worktree_path: f.elements.worktree_path.value.trim(),
    workspace_id: f.elements.workspace_id.value.trim(),
    base_commit_oid: f.elements.base_commit_oid.value.trim(),
  });
  window.location.href = `/sessions/${s.id}`;
}, "Could not create the session");

$("#delete-template").addEventListener("click", (e) => {
  const name = detail?.template.name ?? "this template";
  if (!window.confirm(`Delete template “${name}”? Sessions made from it keep running.`)) return;
  act(async () => {
    await del(base);
    window.location.href = "/templates";
  }, { button: e.currentTarget, context: "Could not delete the template", near: e.currentTarget.parentElement });
});

onReconnect(start);
start();
