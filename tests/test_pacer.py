"""The checkpoint pacer's cost model: forks, their copy-on-write faults measured by the zygote
and reported by workers, against the share of a core checkpoints may take."""

from __future__ import annotations

from typing import Any

from server.http.keys import SERVICES
from server.runtime import pacer as pacer_mod
from server.runtime.pacer import CheckpointPacer
from server.runtime.zygote import cow_fault_cost


def test_one_copy_on_write_fault_costs_something_measurable_and_far_below_a_millisecond() -> None:
    cost = cow_fault_cost()
    assert 0 < cost < 1e-3


def test_the_faults_a_checkpoint_causes_count_in_its_cost() -> None:
    p = CheckpointPacer()
    p.fault_s = 5e-6
    p.note_checkpoint(0.001)
    before = p.cost_s
    for _ in range(50):
        p.note_faults(1000)  # 1000 copied pages per run after a checkpoint: ~5 ms
    assert p.cost_s > before + 0.004
    assert p.cost_s < 0.001 * pacer_mod.FORK_FACTOR + 1000 * 5e-6 + 1e-9


def test_checkpoints_are_deferred_only_when_their_cost_times_the_rate_passes_the_budget(
    monkeypatch: Any,
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(pacer_mod.time, "monotonic", lambda: clock[0])
    p = CheckpointPacer()
    p.fault_s = 5e-6
    for _ in range(20):
        p.note_checkpoint(0.0005)
    # 1 ms per checkpoint all told: 100 executions a second take 10% of a core.
    assert abs(p.cost_s - 0.001) < 1e-4
    for _ in range(100):
        p.note_run()
        clock[0] += 0.01
    assert p.delay() == 0.0
    # The same rate with runs that copy 1000 pages after each checkpoint: 6 ms each, 60%.
    for _ in range(50):
        p.note_faults(1000)
    for _ in range(100):
        p.note_run()
        clock[0] += 0.01
    assert p.delay() == pacer_mod.DEFERRED_DELAY_S
    # Idle again: the next run is checkpointed right after it.
    clock[0] += 5.0
    p.note_run()
    assert p.delay() == 0.0


async def test_workers_report_the_faults_of_the_run_after_a_checkpoint(api: Any, client: Any) -> None:
    pacer = client.server.app[SERVICES].sessions.ctx.pool.pacer
    assert 0 < pacer.fault_s < 1e-3  # measured by this server's zygote
    s = await api.session()
    await api.value(s["id"], "var xs = []")
    for _ in range(5):
        # Each run rewrites pages the checkpoint before it shares: they are copied first.
        await api.value(s["id"], "for (let i = 0; i < 20000; i++) xs.push({i}); xs.length")
    assert pacer._faults > 50  # Done, which carries them, comes before the answer
