// Is this REPL input an unfinished statement? Used to decide what Enter does: like Node's REPL,
// an unfinished statement gets a new line instead of being run.
//
// This is a deliberately small scanner, not a parser. It walks the text once, skipping over
// strings, template literals, comments and (roughly) regular expression literals, and keeps a
// stack of the brackets still open. The input is unfinished when, at the end:
//   - a bracket ( [ { is still open,
//   - a string, template literal or block comment is still open, or
//   - the last token is an operator or a comma that needs something after it (`a +`, `x =`,
//     `f(a,` …; but not `i++` / `i--`).
// Anything it cannot judge counts as finished: the server then reports the syntax error,
// which is better than an Enter key that seems to do nothing. Extra closing brackets, for
// the same reason, count as finished.

const OPEN = { "(": ")", "[": "]", "{": "}" };
const CLOSE = new Set([")", "]", "}"]);
// Characters that, ending the input, leave an operator waiting for its right-hand side.
const TRAILING_OPERATOR = new Set([",", "+", "-", "*", "/", "%", "=", "&", "|", "^", "!", "~", "?", ":", "<", ">", "."]);
// After one of these (or at the start), a `/` begins a regular expression, not a division.
const BEFORE_REGEX = new Set(["", "(", ",", "=", ":", "[", "!", "&", "|", "?", "{", "}", ";", "+", "-", "*", "%", "<", ">", "~", "^"]);
const REGEX_KEYWORDS = /(?:^|[^\w$])(?:return|typeof|instanceof|in|of|new|delete|void|throw|case|do|else|yield|await)$/;

/** True when `src` looks like an unfinished statement (see above). */
export function isIncomplete(src) {
  const stack = []; // open brackets, plus "`" for a template literal whose ${…} we are inside
  let i = 0;
  let last = ""; // the last significant character outside strings/comments ("" = none yet)
  let lastAt = -1; // its index
  let lastWasRegex = false;
  const n = src.length;

  /** Skip a '…' or "…" string starting at i; false if it never ends. */
  function skipString(quote) {
    i += 1;
    while (i < n) {
      const c = src[i];
      if (c === "\\") i += 2;
      else if (c === quote) {
        i += 1;
        return true;
      } else i += 1;
    }
    return false;
  }

  /**
   * Skip template text starting at i (just after "`" or after the "}" closing a ${…}).
   * Returns "end" at the closing "`", "expr" at a "${" (the caller scans the expression),
   * or "open" if the input ends inside the template.
   */
  function skipTemplate() {
    while (i < n) {
      const c = src[i];
      if (c === "\\") i += 2;
      else if (c === "`") {
        i += 1;
        return "end";
      } else if (c === "$" && src[i + 1] === "{") {
        i += 2;
        return "expr";
      } else i += 1;
    }
    return "open";
  }

  /** Skip a /regex/flags literal starting at i; false if the line ends first. */
  function skipRegex() {
    i += 1;
    let inClass = false;
    while (i < n) {
      const c = src[i];
      if (c === "\n") return false;
      if (c === "\\") i += 2;
      else {
        if (c === "[") inClass = true;
        else if (c === "]") inClass = false;
        else if (c === "/" && !inClass) {
          i += 1;
          while (i < n && /[a-z]/i.test(src[i])) i += 1;
          return true;
        }
        i += 1;
      }
    }
    return false;
  }

  /** Continue template text after its "`" or a closing "}"; false if the input ends in it. */
  function templateText() {
    const r = skipTemplate();
    if (r === "open") return false;
    if (r === "expr") stack.push("`");
    last = r === "end" ? "`" : "{";
    lastWasRegex = false;
    return true;
  }

  while (i < n) {
    const c = src[i];
    if (c === " " || c === "\t" || c === "\n" || c === "\r") {
      i += 1;
    } else if (c === "/" && src[i + 1] === "/") {
      while (i < n && src[i] !== "\n") i += 1; // line comment
    } else if (c === "/" && src[i + 1] === "*") {
      const endAt = src.indexOf("*/", i + 2);
      if (endAt === -1) return true; // unterminated block comment
      i = endAt + 2;
    } else if (c === "'" || c === '"') {
      if (!skipString(c)) return true; // unterminated string
      last = c;
      lastWasRegex = false;
    } else if (c === "`") {
      i += 1;
      if (!templateText()) return true; // unterminated template literal
    } else if (c === "/" && (BEFORE_REGEX.has(last) || REGEX_KEYWORDS.test(src.slice(0, i).trimEnd()))) {
      if (!skipRegex()) return false; // not a regex after all: leave it to the server
      last = "/";
      lastWasRegex = true;
    } else {
      if (OPEN[c]) stack.push(c);
      else if (CLOSE.has(c)) {
        const top = stack.pop();
        if (top === undefined) return false; // extra closer: a syntax error, run it
        if (top === "`") {
          // The "}" ends a ${…}: back into the template's text.
          i += 1;
          if (!templateText()) return true;
          continue;
        }
        if (OPEN[top] !== c) return false; // mismatched: a syntax error, run it
      }
      last = c;
      lastAt = i;
      lastWasRegex = false;
      i += 1;
    }
  }

  if (stack.length > 0) return true;
  if (lastWasRegex || !TRAILING_OPERATOR.has(last)) return false;
  // `i++` / `i--` are complete; so is a number like `1.`.
  const before = src[lastAt - 1];
  if ((last === "+" || last === "-") && before === last) return false;
  if (last === "." && /\d/.test(before ?? "")) return false;
  return true;
}
