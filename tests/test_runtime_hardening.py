"""No JavaScript breaks an execution (issue 10, item 2 and friends): whatever the code produces,
the execution finalizes, REST answers with a body, subscribers get `complete`, and the engine's
own interface stays out of reach."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.conftest import history, stored_events

# Each produces a lone UTF-16 surrogate somewhere a string leaves JavaScript.
LONE_SURROGATES = [
    "'😀'[0]",  # a value
    "'😀'.split('')",  # inside an array
    "({['😀'[0]]: 1})",  # an object key
    "throw new Error('bad ' + '😀'[1])",  # an exception message
    "console.log('😀'[0]); 1",  # a console line
    "console.log({k: '😀'[0]}); 2",  # an expandable console argument
    "console.table([{a: '😀'[0]}]); 3",  # a table cell
    "new Map([['😀'[0], 1]])",  # a Map entry
    "Promise.reject('😀'[1])",  # a rejection
]


@pytest.mark.parametrize("code", LONE_SURROGATES)
async def test_lone_surrogates_never_break_an_execution(api: Any, client: Any, code: str) -> None:
    s = await api.session()
    status, body = await api.repl(s["id"], code)
    assert status == 201, body
    assert body["status"] in ("ok", "error")
    text = str(body)
    assert "\ufffd" in text  # replaced, not dropped: the user sees where it was
    assert all(not 0xD800 <= ord(ch) <= 0xDFFF for ch in text)
    # Stored and readable back, and the session goes on.
    events = await stored_events(client, body["id"])
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert all(ex["status"] != "running" for ex in await history(client, s["id"]))
    assert (await api.value(s["id"], "1 + 1"))["json"] == 2


async def test_a_subscriber_gets_complete_for_a_surrogate_value(api: Any, client: Any) -> None:
    s = await api.session()
    ws = await client.ws_connect("/api/v1/ws")
    await ws.send_json({"type": "execute", "id": 1, "session_id": s["id"], "input": "'😀'[0]"})
    final = None
    while True:
        msg = await asyncio.wait_for(ws.receive_json(), 20)
        if msg["type"] == "execution":
            final = msg["execution"]
        if msg["type"] == "complete":
            break
    assert final is not None and final["status"] == "ok" and final["result"]["preview"] == "\ufffd"
    await ws.close()


async def test_a_huge_integer_in_a_value_is_still_json(api: Any) -> None:
    s = await api.session()
    value = await api.value(s["id"], "[12345678901234567890123, 2 ** 70]")
    assert value["json"] == [pytest.approx(1.2345678901234568e22), pytest.approx(2.0**70)]


async def test_out_of_memory_inside_a_promise_job_is_an_error(api: Any) -> None:
    s = await api.session(mem_mb=16)
    fill = "const a = []; while (true) a.push(new Array(1e5).fill(1))"
    status, body = await api.repl(s["id"], f"await Promise.resolve().then(() => {{ {fill} }}); 'done'")
    assert body["status"] == "error", body
    assert "out of memory" in body["error"]["message"]
    assert (await api.value(s["id"], "'alive'"))["json"] == "alive"


async def test_the_engine_interface_is_out_of_reach(api: Any) -> None:
    s = await api.session()
    names = "['__vm', '__vmi', '__vm_host_console', '__vm_host_call', '__vm_host_event', 'acorn']"
    found = await api.value(s["id"], f"{names}.filter(n => n in globalThis)")
    assert found["json"] == []
    # Nothing the REPL wraps input with is a global either.
    await api.value(s["id"], "function f() { return 1 }\nawait null; f()")
    leaked = await api.value(
        s["id"], "Object.getOwnPropertyNames(globalThis).filter(n => n.startsWith('__vm'))"
    )
    assert leaked["json"] == []
