"""harness.results.lock.claim across real processes: races, killed holders, leftovers."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import socket
from pathlib import Path
from typing import Any

from harness.results.lock import claim, holder, lock_path
from tests.fakes import other_runner_holding

ROUNDS = 40


def _racer(results: str, name: str, barrier: Any, queue: Any) -> None:
    for r in range(ROUNDS):
        barrier.wait(timeout=60)
        with claim(Path(results), f"cell{r:03d}") as mine:
            queue.put((r, name, mine))
            # Both have tried before either lets go, so a loser cannot win after the release.
            barrier.wait(timeout=60)


def test_two_processes_racing_for_a_cell_exactly_one_wins_each_round(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_racer, args=(str(tmp_path), n, barrier, queue)) for n in "ab"]
    for p in procs:
        p.start()
    outcomes = [queue.get(timeout=120) for _ in range(2 * ROUNDS)]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    wins: dict[int, list[str]] = {}
    for r, name, mine in outcomes:
        wins.setdefault(r, [])
        if mine:
            wins[r].append(name)
    assert sorted(wins) == list(range(ROUNDS))
    assert all(len(w) == 1 for w in wins.values()), wins


def test_a_live_holder_in_another_process_keeps_the_cell(tmp_path: Path) -> None:
    with other_runner_holding(tmp_path, "c1") as proc:
        with claim(tmp_path, "c1") as mine:
            assert not mine
        assert holder(tmp_path, "c1") == f"{socket.gethostname()} {proc.pid}"
        with claim(tmp_path, "c2") as other:  # other cells stay free
            assert other
    with claim(tmp_path, "c1") as mine:
        assert mine


def test_a_sigkilled_holders_lock_is_claimable_at_once(tmp_path: Path) -> None:
    with other_runner_holding(tmp_path, "c1") as proc:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert lock_path(tmp_path, "c1").exists()  # the dead holder's note is left behind
        with claim(tmp_path, "c1") as mine:
            assert mine
            assert holder(tmp_path, "c1") == f"{socket.gethostname()} {os.getpid()}"
    assert not lock_path(tmp_path, "c1").exists()


def test_leftover_empty_or_garbage_lock_files_do_not_block(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / "empty.lock").write_text("")
    (folder / ".empty.flock").write_text("")
    (folder / "junk.lock").write_bytes(b"\x00\xffnot a host or pid")
    (folder / ".junk.flock").write_bytes(b"\x00garbage")
    (folder / "old.lock").write_text("another-host 1")
    for cell in ("empty", "junk", "old"):
        with claim(tmp_path, cell) as mine:
            assert mine, cell


def test_a_second_claim_in_the_same_process_fails_while_the_first_is_held(tmp_path: Path) -> None:
    with claim(tmp_path, "c1") as first:
        assert first
        with claim(tmp_path, "c1") as second:
            assert not second
        assert lock_path(tmp_path, "c1").exists()  # the loser leaves the holder's note alone
    assert not lock_path(tmp_path, "c1").exists()
    with claim(tmp_path, "c1") as again:
        assert again


def test_the_claim_is_released_when_the_block_raises(tmp_path: Path) -> None:
    try:
        with claim(tmp_path, "c1"):
            raise RuntimeError("training failed")
    except RuntimeError:
        pass
    with claim(tmp_path, "c1") as mine:
        assert mine
