"""REPL semantics through the real server: state, let/const, await, timers, console, errors."""

from __future__ import annotations


async def test_var_persists_across_executions(api):
    s = await api.session()
    await api.value(s["id"], "var x = 40")
    assert (await api.value(s["id"], "x + 2"))["preview"] == "42"


async def test_let_can_be_declared_again(api):
    s = await api.session()
    await api.value(s["id"], "let a = 1")
    assert (await api.value(s["id"], "let a = 2; a"))["preview"] == "2"
    assert (await api.value(s["id"], "a"))["json"] == 2


async def test_top_level_await(api):
    s = await api.session()
    assert (await api.value(s["id"], "await Promise.resolve(5)"))["preview"] == "5"


async def test_timer_output_arrives_before_the_end(api):
    s = await api.session()
    status, body = await api.repl(s["id"], "setTimeout(() => console.log('later'), 10); 'now'")
    assert status == 201
    types = [(e["type"], e["payload"].get("text") or e["payload"].get("preview")) for e in body["events"]]
    assert types == [
        ("input_echo", "setTimeout(() => console.log('later'), 10); 'now'"),
        ("console", "later"),
        ("value", "now"),
    ]
    assert [e["seq"] for e in body["events"]] == [1, 2, 3]


async def test_console_joins_arguments_like_node(api):
    s = await api.session()
    status, body = await api.repl(s["id"], 'console.log("sum", 20)')
    assert body["events"][1]["payload"] == {"level": "log", "text": "sum 20"}


async def test_type_error_is_an_error_execution_with_stack(api):
    s = await api.session()
    status, body = await api.repl(s["id"], "null.x")
    assert status == 201
    assert body["status"] == "error"
    exc = body["events"][-1]
    assert exc["type"] == "exception"
    assert exc["payload"]["message"].startswith("TypeError:")
    assert exc["payload"]["stack"]
    assert body["error"]["message"].startswith("TypeError:")
