"""A real concurrent symlink swap never yields an outside read or write (API.md §13).

Another process flips `worktree/target` between a file inside and a symlink to a file outside,
as fast as it can. Each layer is tested on its own: the `fs` module's race-free open with
Landlock off (openat2, and the O_NOFOLLOW walk used where openat2 is missing), the server's
run-file read, and Landlock alone under a naive check-then-open. A control shows that the naive
check-then-open does leak under the same swap, so these tests can fail.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from server import errors
from server.core.paths import read_worktree_file
from server.runtime import beneath, modules
from server.runtime.modules import ModuleHost
from tests.test_modules import Host

SECRET = "SECRET-outside-the-worktree"
ROUNDS = 3000

SWAPPER = """
import os, sys, time
wt, outside, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
target, tmp_l, tmp_f = (os.path.join(wt, n) for n in ("target", ".swap-link", ".swap-file"))
end = time.monotonic() + seconds
while time.monotonic() < end:
    os.symlink(outside, tmp_l)
    os.replace(tmp_l, target)
    with open(tmp_f, "w") as fh:
        fh.write("inside")
    os.replace(tmp_f, target)
"""

# Landlock alone: the checks of the fs module are not used here, only realpath-then-open.
NAIVE = """
import json, os, sys, time
from server.runtime import sandbox
wt, outside, confine = os.path.realpath(sys.argv[1]), os.stat(sys.argv[2]), sys.argv[3] == "1"
if confine:
    sandbox.confine(wt)
counts = {"outside": 0, "inside": 0, "denied": 0}
end = time.monotonic() + 30
while time.monotonic() < end and not (counts["denied"] >= 20 if confine else counts["outside"]):
    path = os.path.join(wt, "target")
    for flags in (os.O_RDONLY, os.O_WRONLY):
        try:
            if not os.path.realpath(path).startswith(wt + os.sep):
                continue
            fd = os.open(path, flags)
        except PermissionError:
            counts["denied"] += 1
            continue
        except OSError:
            continue
        st = os.fstat(fd)
        os.close(fd)
        counts["outside" if (st.st_dev, st.st_ino) == (outside.st_dev, outside.st_ino) else "inside"] += 1
print(json.dumps(counts))
"""


@pytest.fixture
def race(worktree: Path, tmp_path: Path) -> Iterator[Path]:
    """A worktree whose `target` a separate process keeps swapping; yields the outside file."""
    outside = tmp_path / "outside.txt"
    outside.write_text(SECRET)
    (worktree / "target").write_text("inside")
    swapper = subprocess.Popen([sys.executable, "-c", SWAPPER, str(worktree), str(outside), "120"])
    try:
        yield outside
    finally:
        swapper.kill()
        swapper.wait()


def hammer(read: Callable[[], str | None], write: Callable[[], None], outside: Path) -> dict[str, int]:
    counts = {"inside": 0, "refused": 0, "outside": 0}
    for _ in range(ROUNDS):
        data = read()
        if data is None:
            counts["refused"] += 1
        else:
            counts["outside" if SECRET in data else "inside"] += 1
        write()
    assert outside.read_text() == SECRET, "an outside file was written through the swapped symlink"
    return counts


def module_hammer(worktree: Path, outside: Path) -> dict[str, int]:
    module_host = ModuleHost(str(worktree), ["fs"], lambda: None)
    host = Host(module_host)
    try:

        def read() -> str | None:
            answer = host.raw("fs", "readFileSync", "target", "utf8")
            return answer.get("ok")

        return hammer(read, lambda: host.raw("fs", "writeFileSync", "target", "overwritten"), outside)
    finally:
        module_host.close()


def test_fs_with_openat2_never_leaves_the_worktree(worktree: Path, race: Path) -> None:
    assert beneath.openat2_available()
    counts = module_hammer(worktree, race)
    assert counts["outside"] == 0, counts
    assert counts["inside"] > 0 and counts["refused"] > 0, counts  # the swap really happened


def test_fs_with_the_nofollow_walk_never_leaves_the_worktree(
    worktree: Path, race: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(modules, "open_beneath", functools.partial(beneath.open_beneath, use_openat2=False))
    counts = module_hammer(worktree, race)
    assert counts["outside"] == 0, counts
    assert counts["inside"] > 0 and counts["refused"] > 0, counts


def test_run_file_reads_never_leave_the_worktree(worktree: Path, race: Path) -> None:
    def read() -> str | None:
        try:
            return read_worktree_file(str(worktree), "target")
        except (errors.InvalidPath, errors.FileNotFound):
            return None

    counts = hammer(read, lambda: None, race)
    assert counts["outside"] == 0, counts
    assert counts["inside"] > 0, counts


def run_naive(worktree: Path, outside: Path, *, confine: bool) -> dict[str, int]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    out = subprocess.run(
        [sys.executable, "-c", NAIVE, str(worktree), str(outside), "1" if confine else "0"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_the_swap_race_is_real_for_a_naive_check_then_open(worktree: Path, race: Path) -> None:
    counts = run_naive(worktree, race, confine=False)
    assert counts["outside"] > 0, counts  # without a defense, the outside file is opened


def test_landlock_alone_stops_the_naive_check_then_open(worktree: Path, race: Path) -> None:
    counts = run_naive(worktree, race, confine=True)
    assert counts["outside"] == 0, counts
    assert counts["denied"] > 0, counts  # the kernel refused opens the check had let through
