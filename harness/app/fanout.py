"""`harness run SUITE --devices cuda:0,cuda:1` / `--workers K`: one runner per device.

Each worker is an ordinary `harness run` process (``--device D``) on the same results
folder; they share out the cells with the runner's per-cell locks (harness.results.lock), so
no cell is trained twice and a killed worker's cells are resumed by whoever comes next. The
parent only starts them, relays their lines with a ``[device]`` prefix, and shows the whole
suite's state (harness.app.status) as cells end: one view of the suite, not K logs.

``--workers K`` without ``--devices``: the first K GPUs when CUDA is there, otherwise K CPU
workers with ``cores / K`` threads each. ``--per-device K`` (or a device named K times) puts
K workers on each device, each capped at 1/K of a GPU's memory (``--memory-fraction``).
``--force`` is refused: a worker would retrain the cells the others just finished.

A worker whose parent dies (SIGKILL, a lost session) notices (`as_worker`: the parent's pid
is in ``HARNESS_PARENT_PID``) and pauses its cell as on preemption, instead of dying at its
next line into the closed pipe; a worker that dies is named by the parent with the cell it
was training.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import torch

from harness.app import status as status_module
from harness.app.console import RunConsole
from harness.config.suite import Suite, select_some
from harness.errors import EXIT_FAILED, EXIT_PAUSED, EXIT_USER_ERROR, STOP_SIGNALS, UserError

# The lines after which the suite's state is shown again: a cell ended (see runner).
_CELL_END = ("ok ", "diverged ", "fail ", "pause ")
_CELL_START = ("train ", "resume ")  # RunConsole.start: "train <cell id> <label> (...)"
PARENT_ENV = "HARNESS_PARENT_PID"


def as_worker() -> None:
    """In a worker of `run_workers` (``HARNESS_PARENT_PID`` set): pause if the parent dies
    (harness.train.preempt.watch_parent)."""
    parent = os.environ.get(PARENT_ENV, "")
    if parent.isdigit():
        from harness.train.preempt import watch_parent

        watch_parent(int(parent))


MAX_PER_DEVICE = 64


def worker_devices(
    devices: str | None, workers: int | None, per_device: int | None = None
) -> list[str]:
    """The device of each worker, from --devices or --workers, each repeated --per-device times.

    A device named K times (cuda:0,cuda:0) is K workers on it, as --devices cuda:0
    --per-device K is: several cells on one GPU at once, each worker's memory capped at 1/K
    of the device (`memory_fractions`). Worth it where a cell is launch-bound (small batches:
    one cell leaves most of the GPU idle between kernels).
    """
    repeat = 1 if per_device is None else per_device
    if not 1 <= repeat <= MAX_PER_DEVICE:
        raise UserError(f"--per-device {per_device}: must be in 1..{MAX_PER_DEVICE}")
    if devices is not None:
        names = [d.strip() for d in devices.split(",") if d.strip()]
        if not names:
            raise UserError("--devices: give a comma-separated list, e.g. cuda:0,cuda:1")
        if workers is not None and workers != len(names):
            raise UserError(f"--workers {workers} and --devices {devices} disagree; give one")
        from harness.app.device_policy import resolve_device

        for name in dict.fromkeys(names):
            resolve_device(name, "--devices")  # here, once, rather than in every worker
        return [name for name in names for _ in range(repeat)]
    assert workers is not None
    if workers < 1:
        raise UserError(f"--workers {workers}: must be at least 1")
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        if workers > count:
            raise UserError(
                f"--workers {workers}: only {count} GPU(s) visible; use --workers {count} "
                f"--per-device {-(-workers // count)}, or --devices cpu,cpu,... for CPU workers"
            )
        return [f"cuda:{i}" for i in range(workers) for _ in range(repeat)]
    return ["cpu"] * (workers * repeat)


def memory_fractions(devices: Sequence[str]) -> list[float | None]:
    """Each worker's cap on its GPU's memory: 1/K for the K workers sharing a CUDA device
    (by its index: cuda and cuda:0 are one device), none for a GPU of its own or the CPU."""

    def key(name: str) -> tuple[str, int | None]:
        device = torch.device(name)
        return device.type, (device.index or 0) if device.type == "cuda" else None

    keys = [key(d) for d in devices]
    shared = {k: keys.count(k) for k in keys}
    return [1.0 / shared[k] if k[0] == "cuda" and shared[k] > 1 else None for k in keys]


def run_workers(
    suite: Suite,
    argv: Sequence[str],
    devices: list[str],
    results: Path,
    only: str | None,
) -> int:
    """Run one `harness run` per device; returns the exit status for the whole suite.

    ``argv``: the options every worker gets (suite path, --set, --results, --data, ...), with
    neither --device nor the fan-out options. 2 if a worker found bad input, 1 if a cell
    failed, 3 if a signal paused the run, else 0.

    SIGTERM, SIGUSR1 and SIGUSR2 are forwarded to every worker, which pauses its cell after
    the step in progress (a mid-epoch checkpoint); the parent waits for them all, then exits.
    """
    cells = select_some(suite, only)
    cpu_workers = sum(d == "cpu" for d in devices)
    threads = max(1, (os.cpu_count() or 1) // max(1, cpu_workers))
    say = RunConsole()
    say.line(f"{suite.name}: {len(devices)} workers on {', '.join(devices)}; results in {results}")
    lock = threading.Lock()

    def show_state() -> None:
        states = status_module.suite_status(cells, results)
        say.line(f"{suite.name}: {status_module.summary_line(states)}")

    training: dict[str, str] = {}  # worker tag -> "cell_id label" it is training now

    def relay(tag: str, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            with lock:
                say.line(f"[{tag}] {line.rstrip()}")
                if line.startswith(_CELL_START):
                    training[tag] = " ".join(line.split()[1:3])
                if line.startswith(_CELL_END):
                    training.pop(tag, None)
                    show_state()

    procs: list[tuple[subprocess.Popen[str], threading.Thread]] = []
    tags: list[str] = []
    forwarded: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        # Each worker pauses its cell after the step in progress (harness.train.preempt);
        # the parent waits for them below rather than leaving them training unseen.
        forwarded.append(signum)
        for proc, _ in procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    on_main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, forward) for s in STOP_SIGNALS} if on_main else {}
    fractions = memory_fractions(devices)
    try:
        for i, device in enumerate(devices):
            env = dict(os.environ, PYTHONUNBUFFERED="1", HARNESS_WORKER=str(i))
            env[PARENT_ENV] = str(os.getpid())
            if device == "cpu":
                env["OMP_NUM_THREADS"] = str(threads)
            cmd = [sys.executable, "-m", "harness", "run", *argv, "--device", device]
            if fractions[i] is not None:
                cmd += ["--memory-fraction", f"{fractions[i]:.6g}"]
            proc = subprocess.Popen(
                cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
            tag = f"{device}#{i}" if devices.count(device) > 1 else device
            thread = threading.Thread(target=relay, args=(tag, proc.stdout), daemon=True)
            thread.start()
            procs.append((proc, thread))
            tags.append(tag)
            if forwarded:  # a signal came while the workers were starting
                proc.send_signal(forwarded[0])
        codes = []
        for proc, thread in procs:
            codes.append(proc.wait())
            thread.join()
    except KeyboardInterrupt:
        for proc, _ in procs:
            proc.terminate()
        raise
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    show_state()
    # A worker that died (a signal nobody forwarded, a crash) named with what it left unfinished.
    for (proc, _), tag, code in zip(procs, tags, codes, strict=True):
        cell = training.get(tag)
        if code in (0, EXIT_USER_ERROR, EXIT_PAUSED) or (code == EXIT_FAILED and cell is None):
            continue
        if code < 0 and -code in forwarded:
            continue
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited {code}"
        what = f"while training cell {cell}" if cell else "between cells"
        say.line(
            f"{suite.name}: worker {tag} (pid {proc.pid}) {how} {what}; rerun to resume"
            + (" it from its last checkpoint" if cell else "")
        )
    if EXIT_USER_ERROR in codes:
        return EXIT_USER_ERROR
    # A worker the signal reached before it could catch it had claimed no cell yet.
    paused = {EXIT_PAUSED, *(-s for s in forwarded)}
    if any(c != 0 and c not in paused for c in codes):
        return EXIT_FAILED
    return EXIT_PAUSED if any(c in paused for c in codes) else 0
