// The REPL's code editor: CodeMirror 6 (vendored, see static/vendor/README.md) with the REPL's keys.
//
// Keys, as in the Node REPL and the browser consoles:
//   Enter        runs the input; an unfinished statement (`isIncomplete`) gets a new line instead,
//                and so does Enter between an auto-closed pair (`{|}`), which opens it up;
//   Shift+Enter  always a new line (auto-indented); Ctrl/Cmd+Enter always runs;
//   ↑ / ↓        earlier / later inputs from the first / last line (a recalled entry not yet
//                edited is stepped over whole);
//   Tab          completes the word before the caret (one candidate: inserted; several: their
//                common prefix, and a popup to pick from, where Tab or Enter takes the chosen
//                one); in leading space or on a selection it indents, elsewhere it inserts an
//                indent; it never leaves the editor, except CodeMirror's escape hatch: Esc then Tab;
//   Esc, Ctrl+C  (with nothing selected) call `onCancel`; Esc is never consumed, so the
//                escape hatch keeps working;
//   Ctrl+L       calls `onClear`.
// `complete(input, cursor)` → `{from, to, candidates: [{name, kind}]}` turns on completion
// (the server's `complete` message, API.md §12); without it Tab only indents. The popup opens
// on Tab or Ctrl+Space, never on its own while typing.

import {
  EditorState,
  Compartment,
  Prec,
  EditorView,
  keymap,
  placeholder,
  drawSelection,
  highlightSpecialChars,
  defaultKeymap,
  history,
  historyKeymap,
  insertNewlineAndIndent,
  indentMore,
  indentLess,
  syntaxHighlighting,
  bracketMatching,
  indentOnInput,
  indentUnit,
  javascript,
  javascriptLanguage,
  autocompletion,
  completionStatus,
  startCompletion,
  acceptCompletion,
  closeBrackets,
  closeBracketsKeymap,
  classHighlighter,
  highlightCode,
} from "../vendor/codemirror.js";
import { isIncomplete } from "./incomplete.js";

const INDENT = "  ";
const PAIRS = new Set(["()", "[]", "{}"]);

/** Enter continues the input instead of running it (see the keys above). */
function continues(state) {
  const text = state.doc.toString();
  if (isIncomplete(text)) return true;
  const { head, empty } = state.selection.main;
  return empty && head > 0 && PAIRS.has(text.slice(head - 1, head + 1));
}

/** The caret ends a word or a dotted path: Tab completes there. */
const COMPLETES_AFTER = /[\w$.]$/;

/** Tab without completion: indent the selected lines or the line's leading space, else insert an indent unit. */
function indent(view) {
  const { state } = view;
  const range = state.selection.main;
  const line = state.doc.lineAt(range.head);
  if (!range.empty || /^\s*$/.test(line.text.slice(0, range.head - line.from))) return indentMore(view);
  view.dispatch(state.replaceSelection(INDENT), { scrollIntoView: true, userEvent: "input" });
  return true;
}

function commonPrefix(names) {
  let prefix = names[0] ?? "";
  for (const name of names) while (!name.startsWith(prefix)) prefix = prefix.slice(0, -1);
  return prefix;
}

/** `complete` with the last answer kept: Tab asks first, and the popup asks again for the same text. */
function remembering(complete) {
  let last = null;
  return async (input, cursor) => {
    if (last && last.input === input && last.cursor === cursor) return last.reply;
    const reply = await complete(input, cursor);
    last = { input, cursor, reply };
    return reply;
  };
}

/** Tab with completion: as the Node REPL, a sole candidate is inserted, several open the popup. */
function tabCompleter(complete) {
  return (view) => {
    const { state } = view;
    if (completionStatus(state) === "active") return acceptCompletion(view) || true; // Tab never leaves with the list open
    const range = state.selection.main;
    const line = state.doc.lineAt(range.head);
    if (!range.empty || !COMPLETES_AFTER.test(line.text.slice(0, range.head - line.from))) return indent(view);
    const doc = state.doc.toString();
    const pos = range.head;
    complete(doc, pos).then((reply) => {
      const now = view.state;
      if (now.doc.toString() !== doc || now.selection.main.head !== pos) return; // typed on meanwhile
      const names = (reply?.candidates ?? []).map((c) => c.name);
      if (names.length === 0) return;
      const typed = doc.slice(reply.from, reply.to);
      const insert = names.length === 1 ? names[0] : commonPrefix(names);
      if (insert.length > typed.length || names.length === 1) {
        view.dispatch({ changes: { from: reply.from, to: reply.to, insert }, selection: { anchor: reply.from + insert.length }, userEvent: "input.complete" });
      }
      if (names.length > 1) startCompletion(view);
    });
    return true;
  };
}

/**
 * Where a candidate goes in the list (the server sends them by name): data first (an object's
 * fields, the user's variables), then functions and the rest, `__proto__` and its kin last.
 */
function rank({ name, kind }) {
  if (name.startsWith("__")) return -10;
  return kind === "property" || kind === "variable" ? 10 : 0;
}

function completionSource(complete) {
  return async (context) => {
    const reply = await complete(context.state.doc.toString(), context.pos);
    if (!reply || !reply.candidates || reply.candidates.length === 0) return null;
    return {
      from: reply.from,
      to: reply.to,
      options: reply.candidates.map((c) => ({ label: c.name, type: c.kind, boost: rank(c) })),
      validFor: /^[\w$]*$/,
    };
  };
}

/**
 * Create the editor in `parent`. `history` has `back(text)`, `forward(text)` (the entry to
 * show, or null) and `browsing(text)`; `onSubmit()` runs the input.
 */
export function createEditor({ parent, id, label, describedBy, placeholderText, history: hist, onSubmit, onCancel, onClear, complete: ask }) {
  const complete = ask ? remembering(ask) : null;
  const editable = new Compartment();
  const hint = new Compartment();

  function recall(view, step) {
    const { state } = view;
    const range = state.selection.main;
    if (!range.empty) return false;
    const text = state.doc.toString();
    const line = state.doc.lineAt(range.head).number;
    const atEdge = step < 0 ? line === 1 : line === state.doc.lines;
    if (!atEdge && !hist.browsing(text)) return false;
    const next = step < 0 ? hist.back(text) : hist.forward(text);
    if (next == null) return false;
    view.dispatch({ changes: { from: 0, to: state.doc.length, insert: next }, selection: { anchor: next.length }, scrollIntoView: true });
    return true;
  }

  const replKeys = [
    { key: "Enter", run: (view) => (continues(view.state) ? insertNewlineAndIndent(view) : (onSubmit(), true)) },
    { key: "Shift-Enter", run: insertNewlineAndIndent },
    { key: "Mod-Enter", run: () => (onSubmit(), true) },
    { key: "Ctrl-Enter", run: () => (onSubmit(), true) },
    { key: "ArrowUp", run: (view) => recall(view, -1) },
    { key: "ArrowDown", run: (view) => recall(view, 1) },
    { key: "Tab", run: complete ? tabCompleter(complete) : indent, shift: indentLess },
    { key: "Escape", run: () => (onCancel?.(), false) },
    { key: "Ctrl-c", run: (view) => view.state.selection.main.empty && Boolean(onCancel?.()) },
    { key: "Ctrl-l", run: () => (onClear?.(), true) },
  ];

  const view = new EditorView({
    parent,
    state: EditorState.create({
      doc: "",
      extensions: [
        history(),
        drawSelection(),
        highlightSpecialChars(),
        indentUnit.of(INDENT),
        EditorState.tabSize.of(2),
        javascript(),
        syntaxHighlighting(classHighlighter),
        bracketMatching(),
        closeBrackets(),
        indentOnInput(),
        EditorView.lineWrapping,
        EditorView.darkTheme.of(true), // the console is dark in both colour schemes
        // The list opens only on Tab (or Ctrl+Space), on purpose: keys act on it at once.
        complete ? autocompletion({ override: [completionSource(complete)], activateOnTyping: false, interactionDelay: 0 }) : [],
        // Above the default keymap (its Enter, Mod-Enter and Mod-l), below the completion
        // popup's own keys (Prec.highest), so Enter picks a candidate while the popup is open.
        Prec.high(keymap.of(replKeys)),
        keymap.of([...closeBracketsKeymap, ...defaultKeymap, ...historyKeymap]),
        EditorView.contentAttributes.of({
          id,
          "aria-label": label,
          "aria-describedby": describedBy,
          spellcheck: "false",
          autocapitalize: "off",
          autocorrect: "off",
        }),
        editable.of([]),
        hint.of(placeholder(placeholderText)),
      ],
    }),
  });

  return {
    view,
    get value() {
      return view.state.doc.toString();
    },
    set value(text) {
      view.dispatch({ changes: { from: 0, to: view.state.doc.length, insert: text }, selection: { anchor: text.length } });
    },
    focus() {
      view.focus();
    },
    get hasFocus() {
      return view.hasFocus;
    },
    setEnabled(on) {
      view.dispatch({
        effects: editable.reconfigure(
          on ? [] : [EditorView.editable.of(false), EditorState.readOnly.of(true), EditorView.contentAttributes.of({ "aria-disabled": "true" })],
        ),
      });
      view.dom.classList.toggle("is-disabled", !on);
    },
    setPlaceholder(text) {
      view.dispatch({ effects: hint.reconfigure(placeholder(text)) });
    },
  };
}

/** `code` as highlighted nodes (the same token classes as the editor), for inputs in the log. */
export function highlightedNodes(code) {
  const out = [];
  const tree = javascriptLanguage.parser.parse(code);
  highlightCode(
    code,
    tree,
    classHighlighter,
    (text, classes) => out.push(classes ? Object.assign(document.createElement("span"), { className: classes, textContent: text }) : document.createTextNode(text)),
    () => out.push(document.createTextNode("\n")),
  );
  return out;
}
