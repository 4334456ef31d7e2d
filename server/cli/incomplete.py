"""When terminal input is an unfinished JavaScript statement (the `...` prompt of `vm-system repl`)."""

from __future__ import annotations

_REGEX_PRECEDERS = set("(,=:[!&|?{};+-*%<>~^")
_CONTINUATION_CHARS = set("+-*%&|^!~<>=?:,.")
_CLOSERS = {")": "(", "]": "[", "}": "{"}


def is_incomplete(source: str) -> bool:
    """Heuristic: does this JavaScript need more lines (open bracket, string, trailing operator)?

    Errs towards "complete" on anything odd, so the server reports the syntax error.
    """
    stack: list[str] = []
    significant: list[str] = []
    i, n = 0, len(source)
    while i < n:
        c = source[i]
        if stack and stack[-1] == "`":  # inside a template literal
            if c == "\\":
                i += 2
            elif c == "`":
                stack.pop()
                significant.append("`")
                i += 1
            elif source.startswith("${", i):
                stack.append("${")
                i += 2
            else:
                i += 1
            continue
        if c in "\"'":
            j = i + 1
            while j < n and source[j] != c and source[j] != "\n":
                j += 2 if source[j] == "\\" else 1
            significant.append("s")
            i = j + 1
            continue
        if source.startswith("//", i):
            end = source.find("\n", i)
            i = n if end < 0 else end
            continue
        if source.startswith("/*", i):
            end = source.find("*/", i + 2)
            if end < 0:
                return True
            i = end + 2
            continue
        if c == "/":
            prev = next((ch for ch in reversed(significant) if not ch.isspace()), "")
            if prev == "" or prev in _REGEX_PRECEDERS:
                j, in_class = i + 1, False
                while j < n and source[j] != "\n":
                    ch = source[j]
                    if ch == "\\":
                        j += 2
                        continue
                    if ch == "[":
                        in_class = True
                    elif ch == "]":
                        in_class = False
                    elif ch == "/" and not in_class:
                        break
                    j += 1
                significant.append("r")
                i = j + 1
                continue
        if c == "`":
            stack.append("`")
        elif c in "([{":
            stack.append(c)
        elif c in _CLOSERS:
            if c == "}" and stack and stack[-1] == "${":
                stack.pop()  # back inside the template literal
                i += 1
                continue
            if not stack or stack[-1] != _CLOSERS[c]:
                return False
            stack.pop()
        if not c.isspace():
            significant.append(c)
        i += 1
    if stack:
        return True
    tail = "".join(significant[-2:])
    if tail in ("++", "--"):
        return False
    return bool(tail) and tail[-1] in _CONTINUATION_CHARS
