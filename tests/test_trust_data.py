"""Trust, third pass (issue 39 items 3, 8, 9, 10, 11, 12): data files, checkpoints and the
adaptive gate that fooled the harness or stopped it with a traceback, through the real CLI.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_cli


def one_line_error(result, *needles: str) -> str:
    """The one stderr line of a refused command (exit 2, no traceback), holding `needles`."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


TINY = """\
name: tiny
dataset: {dataset}
models:
  small: {{name: small_cnn, width: 4}}
optimizers:
  momentum: {{kind: momentum, lr: 0.05, momentum: 0.9}}
schedule: {{epochs: 1, milestones: [], factor: 2, batch_size: 16}}
schedules:
  decaying: {{realization: lr}}
training: {{ghost_batch_size: 8}}
execution: {{eval_batch_size: 32}}
experiments:
  - {{name: grid, optimizers: [momentum], schedules: [decaying], seeds: [0]}}
"""


def _tiny_suite(folder: Path, dataset: str) -> Path:
    path = folder / "tiny.yaml"
    path.write_text(TINY.format(dataset=dataset))
    return path


# --- 39.3: class labels are integers in 0..classes-1 ------------------------------------------


def _cifar_folder(root: Path, labels: object, per_batch: int = 16) -> Path:
    """A CIFAR-10 folder whose first training batch holds `labels` (the others are fine)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        y = labels if name == "data_batch_1" else [int(v) for v in np.arange(per_batch) % 10]
        (folder / name).write_bytes(pickle.dumps({"data": x, "labels": y}, protocol=3))
    return root


@pytest.mark.parametrize(
    ("labels", "says"),
    [
        ([1.7] * 16, "floats"),  # was cut to 1 and trained "ok" with a loss of 0.0000
        (["cat"] * 16, "strings"),
        ([10**30] + [0] * 15, "outside 0..9"),
        ({i: 0 for i in range(16)}, "a dict"),
        ([True] * 16, "booleans"),
        ([0] * 15, "one label per image"),
    ],
)
def test_cifar_labels_that_are_not_class_indices_are_one_line(tmp_path, labels, says):
    data = _cifar_folder(tmp_path / "data", labels)
    suite = _tiny_suite(tmp_path, "{name: cifar10, train_size: 16, test_size: 16}")
    results = tmp_path / "results"
    result = run_cli("run", str(suite), "--results", str(results), "--data", str(data))
    one_line_error(result, "data_batch_1", "'labels'", says, "integers 0..9")
    assert not (results / "runs").exists() or not any((results / "runs").iterdir())


def test_arrays_labels_that_are_not_integers_are_one_line(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(32, 32, 32, 3), dtype=np.uint8)
    path = tmp_path / "d.npz"
    np.savez(path, train_x=x, train_y=np.full(32, 1.7), test_x=x, test_y=np.arange(32) % 3)
    dataset = f"{{name: arrays, path: {json.dumps(str(path))}, classes: 3, train_size: 32}}"
    suite = _tiny_suite(tmp_path, dataset)
    result = run_cli("run", str(suite), "--results", str(tmp_path / "r"), "--device", "cpu")
    one_line_error(result, "dataset.path", "train_y", "floats", "integers 0..classes-1")


# --- 39.11: an `arrays` .npz is checked from its headers, before training -------------------


def _arrays_suite(tmp_path: Path, path: Path) -> Path:
    dataset = f"{{name: arrays, path: {json.dumps(str(path))}, classes: 3, train_size: 32}}"
    return _tiny_suite(tmp_path, dataset)


def _run_arrays(tmp_path: Path, path: Path):
    suite = _arrays_suite(tmp_path, path)
    return run_cli("run", str(suite), "--results", str(tmp_path / "r"), "--device", "cpu")


def _save_arrays(path: Path, channels: int = 3) -> Path:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(32, 32, 32, channels), dtype=np.uint8)
    y = np.arange(32) % 3
    np.savez(path, train_x=x, train_y=y, test_x=x, test_y=y)
    return path


@pytest.mark.parametrize("channels", [1, 4])
def test_arrays_of_other_channels_than_the_model_takes_are_refused_before_training(
    tmp_path, channels
):
    result = _run_arrays(tmp_path, _save_arrays(tmp_path / "d.npz", channels))
    line = one_line_error(result, "dataset.path", f"{channels} channel(s)", "'small'", "takes 3")
    assert "(N, H, W, 3)" in line
    assert not (tmp_path / "r" / "runs").exists()


def _npy(shape: tuple[int, ...], data: bytes, dtype: str = "|u1") -> bytes:
    import io

    buffer = io.BytesIO()
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue() + data


def _npz(path: Path, members: dict[str, bytes]) -> Path:
    import zipfile

    with zipfile.ZipFile(path, "w") as zf:
        for name, blob in members.items():
            zf.writestr(f"{name}.npy", blob)
    return path


def _members_of(path: Path) -> dict[str, bytes]:
    import zipfile

    with zipfile.ZipFile(path) as zf:
        return {n.removesuffix(".npy"): zf.read(n) for n in zf.namelist()}


def test_a_header_declaring_more_than_the_member_holds_is_one_line(tmp_path):
    members = _members_of(_save_arrays(tmp_path / "ok.npz"))
    # 10**7 images of 32x32x3 declared (30 GB), 3 KB there: was a 30 GB allocation attempt.
    members["train_x"] = _npy((10**7, 32, 32, 3), bytes(3072))
    result = _run_arrays(tmp_path, _npz(tmp_path / "big.npz", members))
    one_line_error(result, "dataset.path", "train_x", "(10000000, 32, 32, 3)", "holds 3,072 bytes")


def test_data_shorter_than_declared_is_not_called_pickled_data(tmp_path):
    members = _members_of(_save_arrays(tmp_path / "ok.npz"))
    members["test_x"] = members["test_x"][:-100]
    result = _run_arrays(tmp_path, _npz(tmp_path / "short.npz", members))
    line = one_line_error(result, "dataset.path", "test_x", "cut-short")
    assert "pickled" not in line


def _patch_member_headers(path: Path, offset_local: int, offset_central: int, value: bytes):
    """Overwrite a field of every local and central zip header (a forged member)."""
    blob = bytearray(path.read_bytes())
    for signature, offset in ((b"PK\x03\x04", offset_local), (b"PK\x01\x02", offset_central)):
        start = blob.find(signature)
        while start != -1:
            blob[start + offset : start + offset + len(value)] = value
            start = blob.find(signature, start + 4)
    path.write_bytes(bytes(blob))


@pytest.mark.parametrize(
    ("local", "central", "value", "says"),
    [
        (6, 8, b"\x01\x00", "encrypted"),  # general purpose flag bit 0
        (8, 10, b"\x63\x00", "zip method 99"),  # AES / an unknown compression method
    ],
)
def test_an_encrypted_or_unknown_compression_member_is_one_line(
    tmp_path, local, central, value, says
):
    path = _save_arrays(tmp_path / "d.npz")
    _patch_member_headers(path, local, central, value)
    result = _run_arrays(tmp_path, path)
    one_line_error(result, "dataset.path", "train_x", says)


# --- 39.12: image folders: a link loop or a non-UTF-8 name is skipped and counted -------------

IMAGENET_SUITE = """\
name: folder
dataset: {{name: imagenet, train_size: {n}, test_size: 6, image_size: 32}}
models:
  resnet: {{name: resnet50, width: 4, max_blocks: 1}}
optimizers:
  momentum: {{kind: momentum, lr: 0.1, momentum: 0.9}}
schedule: {{epochs: 1, milestones: [], batch_size: 8}}
schedules:
  constant: {{realization: lr}}
training: {{ghost_batch_size: 4}}
execution: {{eval_batch_size: 6, loader_workers: 0}}
experiments:
  - {{name: tiny, optimizers: [momentum], schedules: [constant], seeds: [0]}}
"""


def _image_folder(root: Path, per_class: int = 8) -> Path:
    from PIL import Image

    classes = ("n01440764", "n01443537", "n01484850")
    rng = np.random.default_rng(0)
    for split, count in (("train", per_class), ("val", 2)):
        for wnid in classes:
            folder = root / "imagenet" / split / wnid
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, size=(40, 48, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{wnid}_{i}.JPEG", quality=90)
    return root


def test_a_link_loop_and_a_non_utf8_name_are_skipped_and_counted(tmp_path):
    data = _image_folder(tmp_path / "data")
    train = data / "imagenet" / "train" / "n01443537"
    os.symlink("loop.jpg", train / "loop.jpg")  # follows itself: ELOOP (errno 40)
    with open(os.fsencode(train) + b"/bad\xff.jpg", "wb") as f:  # not UTF-8: was a traceback
        f.write((train / "n01443537_0.JPEG").read_bytes())
    suite = tmp_path / "suite.yaml"
    results = tmp_path / "results"
    args = ("--results", str(results), "--device", "cpu", "--data", str(data))

    suite.write_text(IMAGENET_SUITE.format(n=26))  # every file counted: two are not images
    refused = run_cli("run", str(suite), *args)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "Traceback" not in refused.stderr
    assert "24 readable images" in refused.stderr and "dataset.train_size=24" in refused.stderr
    assert "skipped 2 of 26" in refused.stderr, refused.stderr
    assert "loop.jpg" in refused.stderr and "symbolic links" in refused.stderr
    assert "bad\\xff.jpg" in refused.stderr and "not UTF-8" in refused.stderr


def test_a_class_folder_named_in_other_bytes_than_utf8_is_one_line(tmp_path):
    data = _image_folder(tmp_path / "data")
    folder = os.fsencode(data / "imagenet" / "train") + b"/n0\xff"
    os.mkdir(folder)
    image = data / "imagenet" / "train" / "n01440764" / "n01440764_0.JPEG"
    with open(folder + b"/x.jpg", "wb") as f:  # was a UnicodeEncodeError traceback
        f.write(image.read_bytes())
    suite = tmp_path / "suite.yaml"
    suite.write_text(IMAGENET_SUITE.format(n=24))
    result = run_cli("run", str(suite), "--results", str(tmp_path / "r"), "--data", str(data))
    one_line_error(result, "n0\\xff", "not UTF-8", "rename it")


# --- 39.8 / 39.9: a paused cell's checkpoint: another device's generator, forged state --------

PAUSE_SUITE = """\
name: pause
dataset: {{name: synthetic, train_size: 256, test_size: 64}}
models:
  small: {{name: small_cnn, width: 4}}
optimizers:
  momentum: {{kind: momentum, lr: 0.05, momentum: 0.9}}
schedule: {{epochs: 3, milestones: [2], factor: 2, batch_size: 32}}
schedules:
  decaying: {{realization: lr}}
  adaptive: {{realization: adaptive, b_max: 128, target: 1.0}}
training: {{ghost_batch_size: 16, precision: fp64}}
execution: {{eval_batch_size: 64, noise_scale: true}}
experiments:
  - {{name: grid, optimizers: [momentum], schedules: [{schedule}], seeds: [0]}}
"""
ONE_THREAD = {"OMP_NUM_THREADS": "1"}
TIMES = ["epoch_time_s", "eval_time_s", "images_per_s"]


def _pause_suite(folder: Path, schedule: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{schedule}.yaml"
    path.write_text(PAUSE_SUITE.format(schedule=schedule))
    return path


def _paused_checkpoint(suite_path: Path, results: Path, steps: int) -> Path:
    """The suite's one cell trained in this process for `steps` steps, then paused between
    two steps as a signal would (a mid-epoch checkpoint where `harness run` keeps it)."""
    import torch

    from harness.app import jobs
    from harness.app.data_loading import load_data
    from harness.config.suite import load_suite
    from harness.results import paths
    from harness.train.loop import train_cell

    suite = load_suite(suite_path)
    cell = suite.cells[0]
    execution = jobs.execution(suite.spec.execution, suite.cells)
    data, _ = load_data(suite, None, torch.device("cpu"), execution.channels_last, suite.cells)
    checkpoint = paths.checkpoint_path(results, cell.cell_id)
    checkpoint.parent.mkdir(parents=True)
    count = {"n": 0}

    def stop() -> bool:
        count["n"] += 1
        return count["n"] >= steps

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the CLI runs below (OMP_NUM_THREADS=1): the same floats
    try:
        progress = train_cell(train_job(cell), data, execution, checkpoint, stop=stop).progress
    finally:
        torch.set_num_threads(threads)
    assert progress.status == "paused"
    assert torch.load(checkpoint, weights_only=True)["progress"]["partial"] is not None
    return checkpoint


def train_job(cell):  # type: ignore[no-untyped-def]
    from harness.app.jobs import train_job as job_of

    return job_of(cell)


def _rows(results: Path):  # type: ignore[no-untyped-def]
    import pandas as pd

    runs = pd.read_parquet(results / "runs").sort_values("cell_id").reset_index(drop=True)
    curves = pd.read_parquet(results / "curves").sort_values(["cell_id", "epoch"])
    return runs, curves.drop(columns=TIMES).reset_index(drop=True)


def _run_pause(suite: Path, results: Path):  # type: ignore[no-untyped-def]
    return run_cli("run", str(suite), "--results", str(results), "--device", "cpu",
                   env=ONE_THREAD)  # fmt: skip


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each schedule's suite run without a pause: the rows a resumed run must equal."""
    folder = tmp_path_factory.mktemp("unbroken")
    out = {}
    for schedule in ("decaying", "adaptive"):
        suite = _pause_suite(folder, schedule)
        done = _run_pause(suite, folder / schedule)
        assert done.returncode == 0, done.stderr
        out[schedule] = folder / schedule
    return out


def _assert_same_rows(results: Path, reference: Path) -> None:
    import pandas as pd

    runs, curves = _rows(results)
    want_runs, want_curves = _rows(reference)
    pd.testing.assert_frame_equal(curves, want_curves)  # losses, checksums, noise, decisions
    same = ["cell_id", "status", "updates", "planned_updates", "final_test_acc"]
    pd.testing.assert_frame_equal(runs[same], want_runs[same])


def test_a_cell_paused_on_another_device_type_resumes_mid_epoch(tmp_path, unbroken):
    """A GPU's generator state is 16 bytes, a CPU's 5056: a cell paused on a GPU failed on
    the CPU at every rerun ("Expected a CPUGeneratorImplState of size 5056 ... rerun to
    retry"). The generator is re-derived from its seed and step: the resumed run ends with
    the rows of an unbroken one."""
    import torch

    suite = _pause_suite(tmp_path, "decaying")
    results = tmp_path / "results"
    checkpoint = _paused_checkpoint(suite, results, steps=3)
    state = torch.load(checkpoint, weights_only=True)
    assert state["progress"]["partial"]["step"] == 3
    state["progress"]["partial"]["augment_state"] = torch.zeros(16, dtype=torch.uint8)  # CUDA's
    torch.save(state, checkpoint)
    resumed = _run_pause(suite, results)
    assert resumed.returncode == 0, resumed.stderr
    assert "trained from scratch" not in resumed.stderr and "Traceback" not in resumed.stderr
    _assert_same_rows(results, unbroken["decaying"])
    runs, _ = _rows(results)
    assert runs["error"].isna().all()


@pytest.mark.parametrize(
    ("edit", "why"),
    [
        (lambda a: a.pop("position"), "its audit counters are missing"),
        (lambda a: a.update(position=-(10**9)), "audit position -1000000000 after 3 steps"),
        (lambda a: a.clear(), "its audit counters are missing"),
    ],
)
def test_a_forged_mid_epoch_audit_trains_from_scratch(tmp_path, unbroken, edit, why):
    """An audit counter deleted or moved used to end "ok" with wrong tier-0 checksums."""
    import torch

    suite = _pause_suite(tmp_path, "decaying")
    results = tmp_path / "results"
    checkpoint = _paused_checkpoint(suite, results, steps=3)
    state = torch.load(checkpoint, weights_only=True)
    edit(state["progress"]["partial"]["audit"])
    torch.save(state, checkpoint)
    rerun = _run_pause(suite, results)
    assert rerun.returncode == 0, rerun.stderr
    assert "trained from scratch" in rerun.stderr and why in rerun.stderr, rerun.stderr
    runs, _ = _rows(results)
    assert runs["status"][0] == "ok" and why in runs["error"][0]
    _assert_same_rows(results, unbroken["decaying"])  # from scratch: the unbroken numbers


def _forge_decision(state: dict, field: str) -> int:  # type: ignore[type-arg]
    """Edit the decision at epoch 1 of a checkpoint paused 1 step into epoch 2; keep every
    other counter consistent with the edit, so that only the rule can tell. The forged B."""
    progress = state["progress"]
    decision = progress["decisions"][0]
    assert decision["epoch"] == 1 and progress["partial"]["step"] == 1
    rule_b = decision["batch_size"]
    forged = next(b for b in (128, 112, 96, 64, 48, 32) if b != rule_b)
    if field == "batch_size":
        decision["batch_size"] = forged
    else:  # a B_simple that the rule would turn into the forged batch
        decision["b_simple"] = float(forged)
        decision["batch_size"] = forged
    audit = progress["partial"]["audit"]
    audit.update(position=forged, batch=forged, micro=min(audit["micro"], forged))
    return forged


@pytest.mark.parametrize(
    ("field", "why"),
    [
        ("batch_size", "where the rule gives"),
        ("b_simple", "where the curves before it measured"),
    ],
)
def test_a_forged_adaptive_decision_trains_from_scratch(tmp_path, unbroken, field, why):
    """A decision's batch edited in the checkpoint (B 256 where the rule gives 112) used to
    finish "ok" with the wrong update count."""
    import torch

    suite = _pause_suite(tmp_path, "adaptive")
    results = tmp_path / "results"
    checkpoint = _paused_checkpoint(suite, results, steps=9)  # 8 steps of epoch 1, 1 of 2
    state = torch.load(checkpoint, weights_only=True)
    _forge_decision(state, field)
    torch.save(state, checkpoint)
    rerun = _run_pause(suite, results)
    assert rerun.returncode == 0, rerun.stderr
    assert "trained from scratch" in rerun.stderr and why in rerun.stderr, rerun.stderr
    runs, _ = _rows(results)
    assert runs["status"][0] == "ok" and runs["updates"][0] == runs["planned_updates"][0]
    _assert_same_rows(results, unbroken["adaptive"])


# --- 39.10: what `harness check` holds an adaptive cell to -----------------------------------


def _edit_curves(results: Path, edit) -> None:  # type: ignore[no-untyped-def]
    """Apply `edit` to each curves file's frame, keeping its Parquet schema."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for path in (results / "curves").glob("*.parquet"):
        table = pq.read_table(path)
        frame = edit(table.to_pandas())
        pq.write_table(pa.Table.from_pandas(frame, schema=table.schema, preserve_index=False), path)


def _first_decision(frame):  # type: ignore[no-untyped-def]
    rows = frame.index[frame["decision_batch_size"].notna()]
    return rows[0]


def _rule_of(suite: Path):  # type: ignore[no-untyped-def]
    from harness.app.jobs import train_job as job_of
    from harness.config.suite import load_suite

    rule = job_of(load_suite(suite).cells[0]).decided
    assert rule is not None
    return rule


def _check(tmp_path: Path, suite: Path, current: Path, baseline: Path):  # type: ignore[no-untyped-def]
    return run_cli("check", str(suite), "--baseline", str(baseline), "--results", str(current),
                   "--device", "cpu", env=ONE_THREAD)  # fmt: skip


@pytest.fixture
def adaptive_pair(tmp_path, unbroken):  # type: ignore[no-untyped-def]
    """(suite, a finished run reused as the check's current run, a copy to forge as baseline)."""
    import shutil

    suite = _pause_suite(tmp_path, "adaptive")
    current, baseline = tmp_path / "current", tmp_path / "baseline"
    shutil.copytree(unbroken["adaptive"], current)
    shutil.copytree(unbroken["adaptive"], baseline)
    return suite, current, baseline


def test_check_says_what_is_exact_for_an_adaptive_cell_and_takes_b_simple_within_5pc(
    tmp_path, adaptive_pair
):
    """Another machine's baseline: B_simple 1 % off, the same decisions: passes, saying what
    was exact and what a tolerance. 40 % off (the same batches, as the rule allows): fails
    on the B_simple row, where it used to pass unseen."""
    suite, current, baseline = adaptive_pair
    rule = _rule_of(suite)

    def scaled(factor: float):  # type: ignore[no-untyped-def]
        def edit(frame):  # type: ignore[no-untyped-def]
            row = _first_decision(frame)
            b_simple = float(frame.loc[row, "decision_b_simple"]) * factor
            previous = rule.batch_size
            frame.loc[row, "decision_b_simple"] = b_simple
            frame.loc[row, "decision_batch_size"] = rule.decide(1, b_simple, previous).batch_size
            return frame

        return edit

    _edit_curves(baseline, scaled(1.01))
    near = _check(tmp_path, suite, current, baseline)
    assert "adaptive cells: exact" in near.stdout and "within 5%" in near.stdout, near.stdout
    if "decisions differ" not in near.stdout:  # 1 % moved no batch: every column exact
        assert near.returncode == 0, near.stdout + near.stderr
    _edit_curves(baseline, scaled(1.4))
    far = _check(tmp_path, suite, current, baseline)
    assert far.returncode == 1, far.stdout + far.stderr
    assert "decision_b_simple" in far.stdout and "moved" in far.stdout


def test_check_fails_a_baseline_whose_decisions_a_changed_rule_would_not_make(
    tmp_path, adaptive_pair
):
    """The rule changed since the baseline was made: its recorded decisions no longer follow
    from its recorded B_simple. An exact regression, named as such."""
    suite, current, baseline = adaptive_pair

    def edit(frame):  # type: ignore[no-untyped-def]
        row = _first_decision(frame)
        batch = int(frame.loc[row, "decision_batch_size"])
        frame.loc[row, "decision_batch_size"] = 128 if batch != 128 else 112
        return frame

    _edit_curves(baseline, edit)
    result = _check(tmp_path, suite, current, baseline)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "baseline's decisions vs rule" in result.stdout and "moved" in result.stdout


def test_a_cell_whose_decisions_flipped_is_held_to_its_own_plan_not_the_baseline(unbroken):
    """A B_simple at a rounding boundary flips one decision on another machine: the cell then
    trains another plan. Its updates are compared with its own plan (exact), noted, and no
    longer with the baseline's, which made 4 "exact" regressions of an unchanged recipe."""
    import json as json_

    from harness.analysis.gate import compare
    from harness.results.store import read_runs

    base = read_runs(unbroken["adaptive"])
    cur = base.copy()
    plan = json_.loads(cur["plan"].iloc[0])
    plan[-1]["updates"] += 2  # another batch from epoch 2 on: 2 more updates
    cur.loc[0, "plan"] = json_.dumps(plan)
    cur.loc[0, "updates"] = cur["updates"].iloc[0] + 2
    cur.loc[0, "planned_updates"] = cur["planned_updates"].iloc[0] + 2
    cell = str(cur["cell_id"].iloc[0])
    assert not compare(base, cur, {}).ok  # what a flip gave before
    flipped = compare(base, cur, {}, apart={cell: 1})
    assert flipped.ok, flipped.table()
    assert any("decisions differ from the baseline's from epoch 2" in n for n in flipped.notes)
    assert any(str(m).startswith("updates vs own plan") for m in flipped.rows["metric"])
    cur.loc[0, "updates"] = cur["updates"].iloc[0] + 1  # not what its own plan takes
    assert not compare(base, cur, {}, apart={cell: 1}).ok
