"""Event ids on PostgreSQL: blocks of the database's sequence, unique across stores, increasing."""

from __future__ import annotations

import asyncio
import itertools

from server.config import Settings
from server.pipeline.ids import MAX_ALLOCATION, BlockIds
from tests.conftest import open_store


async def test_two_nodes_take_disjoint_increasing_ids(pg_schema_url: str) -> None:
    url = Settings.from_env({}, db_url=pg_schema_url).db_url
    async with open_store(url) as one, open_store(url) as two:
        a, b = BlockIds(one), BlockIds(two)
        await a.start()
        await b.start()
        taken: dict[str, list[int]] = {"a": [], "b": []}
        for i in range(40):  # 40 x 300 ids each, interleaved: several blocks per node
            for name, ids in (("a", a), ("b", b)):
                base = ids.allocate(300)
                taken[name].extend(range(base, base + 300))
            if i % 5 == 0:
                await asyncio.sleep(0.01)  # let the blocks fetched ahead arrive
        for name in ("a", "b"):
            assert taken[name] == sorted(taken[name])  # increasing on each node
        assert not set(taken["a"]) & set(taken["b"])  # never the same id twice
        assert a.blocks >= 12 and b.blocks >= 12
        await a.close()
        await b.close()


class LateSource:
    """A sequence whose block fetched ahead arrives only after one was taken on the spot."""

    id_block = 1000

    def __init__(self) -> None:
        self._next = itertools.count(1, 1000)
        self.release = asyncio.Event()

    async def next_id_block(self) -> int:
        first = next(self._next)  # asked for first: the smaller block...
        await self.release.wait()  # ...but it comes late
        return first

    def next_id_block_now(self) -> int:
        return next(self._next)


async def test_a_block_fetched_ahead_that_comes_late_is_not_used_backwards() -> None:
    source = LateSource()
    ids = BlockIds(source)
    source.release.set()
    await ids.start()  # block 1..1000
    source.release.clear()
    got = [ids.allocate(MAX_ALLOCATION)]  # past half: a block is fetched ahead (1001), held back
    await asyncio.sleep(0)
    got += [ids.allocate(MAX_ALLOCATION) for _ in range(2)]  # block exhausted: 2001 on the spot
    source.release.set()
    await asyncio.sleep(0.01)  # now 1001 arrives, older than the block in use
    got += [ids.allocate(MAX_ALLOCATION) for _ in range(4)]
    assert got == sorted(got) and len(set(got)) == len(got), got
    assert ids.waited >= 2  # the late block was refused, another taken
    await ids.close()
