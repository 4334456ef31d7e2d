// What the UI uses from CodeMirror 6, bundled once into ../codemirror.js (see ../README.md).
export { EditorState, EditorSelection, Compartment, Prec } from "@codemirror/state";
export { EditorView, keymap, placeholder, drawSelection, highlightSpecialChars } from "@codemirror/view";
export { defaultKeymap, history, historyKeymap, insertNewlineAndIndent, indentMore, indentLess } from "@codemirror/commands";
export { syntaxHighlighting, bracketMatching, indentOnInput, indentUnit } from "@codemirror/language";
export { javascript, javascriptLanguage } from "@codemirror/lang-javascript";
export { autocompletion, closeBrackets, closeBracketsKeymap, completionStatus, startCompletion, acceptCompletion, closeCompletion, currentCompletions } from "@codemirror/autocomplete";
export { classHighlighter, highlightCode } from "@lezer/highlight";
