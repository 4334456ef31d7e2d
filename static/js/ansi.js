// ANSI SGR colours in console text, as spans with classes (never raw escapes, never HTML).
//
// Supported: 0 reset, 1 bold, 2 dim, 3 italic, 4 underline, 22/23/24 their resets, 30-37 and
// 90-97 foreground, 40-47 and 100-107 background, 39/49 default colours, and 38/48 with
// `5;n` (256 colours) or `2;r;g;b` (truecolour). The 16 basic colours are classes
// (`ansi-fg-0` … `ansi-fg-15`, `ansi-bg-…`) so the stylesheet can pick readable shades for
// the dark console and the light pages; 256-colour and truecolour values are set as inline
// colours (through the CSSOM, which the page's CSP allows). Other escape sequences (cursor
// moves, erase line, OSC titles) are dropped.

import { h } from "./dom.js";

// CSI sequences (ESC [ params final), OSC strings (ESC ] … BEL or ESC \), and a lone ESC.
const ESCAPES = /\x1b\[([0-9;:?]*)([ -/]*[@-~])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b/g;

/** Does `text` carry any escape sequence at all? (The common case is no: plain text.) */
export function hasAnsi(text) {
  return text.includes("\x1b");
}

/** The text with every escape sequence removed. */
export function stripAnsi(text) {
  return hasAnsi(text) ? text.replace(ESCAPES, "") : text;
}

function cube(n) {
  // xterm's 256-colour palette: 16-231 a 6×6×6 cube, 232-255 a grey ramp.
  if (n >= 232) {
    const v = 8 + (n - 232) * 10;
    return `rgb(${v}, ${v}, ${v})`;
  }
  const i = n - 16;
  const level = (x) => (x === 0 ? 0 : 55 + x * 40);
  return `rgb(${level(Math.floor(i / 36))}, ${level(Math.floor(i / 6) % 6)}, ${level(i % 6)})`;
}

/** Read an extended colour (38/48 …) from `codes` at `i`; returns [colour, next index]. */
function extended(codes, i) {
  if (codes[i + 1] === 5 && codes[i + 2] !== undefined) {
    const n = codes[i + 2];
    if (n >= 0 && n < 16) return [{ index: n }, i + 3];
    if (n >= 16 && n < 256) return [{ css: cube(n) }, i + 3];
    return [null, i + 3];
  }
  if (codes[i + 1] === 2 && codes[i + 4] !== undefined) {
    const [r, g, b] = codes.slice(i + 2, i + 5).map((v) => Math.max(0, Math.min(255, v)));
    return [{ css: `rgb(${r}, ${g}, ${b})` }, i + 5];
  }
  return [null, codes.length];
}

function applySgr(style, params) {
  const codes = params === "" ? [0] : params.split(/[;:]/).map((p) => (p === "" ? 0 : Number(p)));
  for (let i = 0; i < codes.length; i++) {
    const c = codes[i];
    if (c === 0) Object.assign(style, { fg: null, bg: null, bold: false, dim: false, italic: false, underline: false });
    else if (c === 1) style.bold = true;
    else if (c === 2) style.dim = true;
    else if (c === 3) style.italic = true;
    else if (c === 4) style.underline = true;
    else if (c === 22) style.bold = style.dim = false;
    else if (c === 23) style.italic = false;
    else if (c === 24) style.underline = false;
    else if (c >= 30 && c <= 37) style.fg = { index: c - 30 };
    else if (c >= 90 && c <= 97) style.fg = { index: c - 90 + 8 };
    else if (c >= 40 && c <= 47) style.bg = { index: c - 40 };
    else if (c >= 100 && c <= 107) style.bg = { index: c - 100 + 8 };
    else if (c === 39) style.fg = null;
    else if (c === 49) style.bg = null;
    else if (c === 38 || c === 48) {
      const [colour, next] = extended(codes, i);
      if (c === 38) style.fg = colour;
      else style.bg = colour;
      i = next - 1;
    }
    // Anything else (blink, inverse, fonts…) is ignored, as many terminals do.
  }
}

function isPlain(style) {
  return !style.fg && !style.bg && !style.bold && !style.dim && !style.italic && !style.underline;
}

function styled(text, style) {
  if (isPlain(style)) return document.createTextNode(text);
  const classes = [];
  if (style.fg?.index !== undefined) classes.push(`ansi-fg-${style.fg.index}`);
  if (style.bg?.index !== undefined) classes.push(`ansi-bg-${style.bg.index}`);
  if (style.bold) classes.push("ansi-bold");
  if (style.dim) classes.push("ansi-dim");
  if (style.italic) classes.push("ansi-italic");
  if (style.underline) classes.push("ansi-underline");
  const span = h("span", { class: classes.join(" ") || "ansi" }, text);
  if (style.fg?.css) span.style.color = style.fg.css;
  if (style.bg?.css) {
    span.style.backgroundColor = style.bg.css;
    span.classList.add("ansi-bg");
  }
  return span;
}

/** `text` as nodes: plain text nodes and styled spans, escape sequences consumed. */
export function ansiNodes(text) {
  if (!hasAnsi(text)) return [text];
  const out = [];
  const style = { fg: null, bg: null, bold: false, dim: false, italic: false, underline: false };
  let at = 0;
  for (const m of text.matchAll(ESCAPES)) {
    if (m.index > at) out.push(styled(text.slice(at, m.index), style));
    if (m[2] === "m") applySgr(style, m[1]);
    at = m.index + m[0].length;
  }
  if (at < text.length) out.push(styled(text.slice(at), style));
  return out;
}
