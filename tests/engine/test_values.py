"""The engine's payloads against real QuickJS: values, the inspector, console, exceptions."""

from __future__ import annotations

import pytest

from server.runtime.engine import JsEngine, Outcome
from tests.engine.conftest import Harness

# ---------------------------------------------------------------- value payloads


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("undefined", {"type": "undefined", "preview": "undefined", "json": None}),
        ("null", {"type": "null", "preview": "null", "json": None}),
        ("true", {"type": "boolean", "preview": "true", "json": True}),
        ("42", {"type": "number", "preview": "42", "json": 42}),
        ("1.5", {"type": "number", "preview": "1.5", "json": 1.5}),
        ("NaN", {"type": "number", "preview": "NaN", "json": None}),
        ("'hello'", {"type": "string", "preview": "hello", "json": "hello"}),
        ("10n", {"type": "bigint", "preview": "10"}),
        ("Symbol('x')", {"type": "symbol", "preview": "Symbol(x)"}),
        ("function f() {}; f", {"type": "function", "preview": "[Function: f]"}),
        ("(() => 1)", {"type": "function", "preview": "[Function (anonymous)]"}),
        ("class Foo {}; Foo", {"type": "function", "preview": "[class Foo]"}),
        ("[1, 2, 3]", {"type": "array", "preview": "[ 1, 2, 3 ]", "json": [1, 2, 3]}),
        (
            "({a: 1, b: [1, 2]})",
            {"type": "object", "preview": "{ a: 1, b: [ 1, 2 ] }", "json": {"a": 1, "b": [1, 2]}},
        ),
        ("({b: 1, a: 2})", {"type": "object", "preview": "{ b: 1, a: 2 }", "json": {"b": 1, "a": 2}}),
        (
            "new Date(0)",
            {
                "type": "date",
                "preview": "1970-01-01T00:00:00.000Z",
                "json": "1970-01-01T00:00:00.000Z",
            },
        ),
        ("/a/g", {"type": "regexp", "preview": "/a/g", "json": {}}),
        (
            "new Map([['a', 1]])",
            {
                "type": "map",
                "preview": "Map(1) { 'a' => 1 }",
                "json": {},
                "entries": [
                    [
                        {"type": "string", "preview": "a", "json": "a"},
                        {"type": "number", "preview": "1", "json": 1},
                    ]
                ],
            },
        ),
        (
            "new Set([1, 2])",
            {
                "type": "set",
                "preview": "Set(2) { 1, 2 }",
                "json": {},
                "entries": [
                    {"type": "number", "preview": "1", "json": 1},
                    {"type": "number", "preview": "2", "json": 2},
                ],
            },
        ),
        ("Promise.resolve(5)", {"type": "promise", "preview": "Promise { 5 }", "json": {}}),
        (
            "[undefined, () => 1]",
            {"type": "array", "preview": "[ undefined, [Function (anonymous)] ]", "json": [None, None]},
        ),
    ],
)
def test_value_payloads(shared: Harness, source: str, expected: dict) -> None:
    assert shared.value(source) == expected


def test_error_value_payload(h: Harness) -> None:
    payload = h.value("new TypeError('bad thing')")
    assert payload["type"] == "error"
    assert payload["preview"].startswith("TypeError: bad thing")
    assert payload["json"] == {}


def test_cycle_has_no_json(h: Harness) -> None:
    payload = h.value("const o = {}; o.self = o; o")
    assert payload == {"type": "object", "preview": "<ref *1> { self: [Circular *1] }"}


def test_preview_is_cut_json_is_not(h: Harness) -> None:
    payload = h.value("'x'.repeat(20000)")
    assert payload["preview"] == "x" * 10000 + "… 10,000 more characters"
    assert payload["json"] == "x" * 20000


def test_json_follows_stringify_semantics(h: Harness) -> None:
    payload = h.value("({toJSON() { return {z: 1} }})")
    assert payload["json"] == {"z": 1}
    assert "json" not in h.value("({toJSON() { throw new Error('no') }})")
    assert h.value("[2 ** 64]")["json"] == [18446744073709551616]


# ---------------------------------------------------------------- inspector


@pytest.mark.parametrize(
    ("source", "preview"),
    [
        ("[Symbol('x'), 1n, -0, 'it\\'s']", '[ Symbol(x), 1n, -0, "it\'s" ]'),
        ("['a', 'b\\n']", "[ 'a', 'b\\n' ]"),
        ("class Foo { constructor() { this.x = 1 } }; new Foo()", "Foo { x: 1 }"),
        ("Object.create(null)", "[Object: null prototype] {}"),
        ("({a: {b: {c: {d: 1}}}})", "{ a: { b: { c: [Object] } } }"),
        ("[[[[1]]]]", "[ [ [ [Array] ] ] ]"),
        ("({get g() { return 1 }, set s(v) {}})", "{ g: [Getter], s: [Setter] }"),
        ("({'a-b': 1, [Symbol('s')]: 2})", "{ 'a-b': 1, [Symbol(s)]: 2 }"),
        ("[1, , 3]", "[ 1, <1 empty item>, 3 ]"),
        ("new Uint8Array(3)", "Uint8Array(3) [ 0, 0, 0 ]"),
        ("async function af() {}; af", "[AsyncFunction: af]"),
        ("new Promise(() => {}).x = 1; [new Promise(() => {})]", "[ Promise { <pending> } ]"),
        ("new Number(3)", "[Number: 3]"),
        ("new WeakMap()", "WeakMap { <items unknown> }"),
        ("class B extends Array {}; B", "[class B extends Array]"),
    ],
)
def test_inspect_forms(shared: Harness, source: str, preview: str) -> None:
    assert shared.value(source)["preview"] == preview


def test_inspect_breaks_long_objects_like_node(h: Harness) -> None:
    payload = h.value("({a: 'x'.repeat(30), b: 'y'.repeat(30), c: 'z'.repeat(10)})")
    assert payload["preview"] == (
        "{\n  a: 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx',\n  b: 'yyyyyyyyyyyyyyyyyyyyyyyyyyyyyy',\n"
        "  c: 'zzzzzzzzzz'\n}"
    )
    numbers = h.value("Array.from({length: 30}, (_, i) => i * 3)")["preview"]
    assert numbers.splitlines()[:2] == ["[", "   0,  3,  6,  9, 12, 15, 18, 21, 24,"]


def test_inspect_long_arrays(h: Harness) -> None:
    preview = h.value("Array.from({length: 120}, () => 0)")["preview"]
    assert preview.endswith("... 20 more items\n]")


def test_inspect_settled_promises(h: Harness) -> None:
    h.run("var p1 = Promise.resolve(5); var p2 = Promise.reject(new Error('x')); p2.catch(() => {})")
    assert h.value("p1")["preview"] == "Promise { 5 }"
    preview = h.value("[p2]")["preview"]
    assert preview.startswith("[\n  Promise {\n    <rejected> Error: x")
    assert h.value("async function g() { return 7 }; var p3 = g(); 1")["preview"] == "1"
    h.run("console.log(p3)")
    h.run("console.log(p3)")
    assert h.texts()[-1] == "Promise { 7 }"


# ---------------------------------------------------------------- console


def test_console_formatting(h: Harness) -> None:
    h.run(
        "console.log('sum', 20);"
        "console.log({a: 1, b: [1, 2]});"
        "console.log('%s is %d years', 'Bob', 42.5);"
        "console.log('%i|%f|%j|%%|%c.', 42.9, '1.5', {a: 1}, 'color: red');"
        "console.log(1, 'two', [3]);"
        "console.log('%s', {a: 1}, null);"
        "console.log('no args %s');"
        "console.log();"
    )
    assert h.texts() == [
        "sum 20",
        "{ a: 1, b: [ 1, 2 ] }",
        "Bob is 42.5 years",
        '42|1.5|{"a":1}|%|.',
        "1 two [ 3 ]",
        "{ a: 1 } null",
        "no args %s",
        "",
    ]


def test_console_levels(h: Harness) -> None:
    h.run("for (const l of ['log', 'info', 'warn', 'error', 'debug']) console[l](l + '!')")
    assert h.logs == [(lvl, f"{lvl}!") for lvl in ("log", "info", "warn", "error", "debug")]
    h.logs.clear()
    h.run("console.dir({a: {b: {c: {}}}}); console.table([1]); console.assert(1 === 2, 'nope')")
    assert h.logs == [
        ("log", "{ a: { b: { c: {} } } }"),
        (
            "log",
            "┌─────────┬────────┐\n│ (index) │ Values │\n├─────────┼────────┤\n"
            "│ 0       │ 1      │\n└─────────┴────────┘",
        ),
        ("warn", "Assertion failed: nope"),
    ]


def test_console_shows_errors_with_stack(h: Harness) -> None:
    h.run("function thrower() { return new RangeError('r') }\nconsole.log(thrower())")
    text = h.texts()[0]
    assert text.startswith("RangeError: r\n    at thrower")


def test_console_reply_makes_console_throw(h: Harness) -> None:
    h.console_reply = "output limit reached"
    payload = h.exception("console.log('a'); 'never'")
    assert payload["message"] == "Error: output limit reached"
    assert h.texts() == ["a"]
    h.console_reply = None
    assert h.value("1 + 1")["preview"] == "2"


def test_console_host_that_raises_does_not_break_engine() -> None:
    engine = JsEngine()

    def bad_console(level: str, text: str) -> str | None:
        raise RuntimeError("boom")

    engine.bind_host(console=bad_console, host_call=lambda m, f, a: '{"ok": null}')
    engine.start(kind="repl", source="console.log('x')", filename="", args={}, env={})
    out = engine.poll()
    assert isinstance(out, Outcome) and out.kind == "exception"
    assert "console host failed" in out.payload["message"]
    engine.start(kind="repl", source="2 + 2", filename="", args={}, env={})
    assert engine.poll() == Outcome("value", {"type": "number", "preview": "4", "json": 4})


def test_console_lone_surrogates_are_replaced(h: Harness) -> None:
    h.run("console.log('a\\ud800b')")
    assert h.texts() == ["a\ufffdb"]


# ---------------------------------------------------------------- exceptions


def test_type_error_has_name_message_and_stack(h: Harness) -> None:
    payload = h.exception("function f() {\n  return null.x\n}\nf()")
    assert payload["name"] == "TypeError"
    assert payload["message"].startswith("TypeError: ")
    assert payload["stack"].startswith(payload["message"] + "\n    at f")
    assert "start" not in payload["stack"]  # prelude frames are not shown


def test_reference_error_message(h: Harness) -> None:
    payload = h.exception("x_not_defined")
    assert payload["name"] == "ReferenceError"
    assert payload["message"] == "ReferenceError: x_not_defined is not defined"


def test_thrown_non_errors(h: Harness) -> None:
    assert h.exception("throw 42") == {"message": "Uncaught 42"}
    assert h.exception("throw 'text'") == {"message": "Uncaught 'text'"}
    assert h.exception("throw {code: 1}") == {"message": "Uncaught { code: 1 }"}


def test_syntax_errors(h: Harness) -> None:
    fast = h.exception("1 +")
    assert fast["name"] == "SyntaxError" and fast["message"].startswith("SyntaxError: ")
    parsed = h.exception("let = = 1")
    assert parsed["name"] == "SyntaxError" and parsed["message"].startswith("SyntaxError: ")
    assert h.value("1")["preview"] == "1"


def test_custom_error_class(h: Harness) -> None:
    payload = h.exception(
        "class MyErr extends Error { constructor(m) { super(m); this.name = 'MyErr' } }\n"
        "throw new MyErr('custom')"
    )
    assert payload["name"] == "MyErr"
    assert payload["message"] == "MyErr: custom"
