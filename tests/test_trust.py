"""A shared results folder that nobody can turn against its user (issue 31, second pass).

Another user of the folder plants links and odd entries; the real CLI (a subprocess) must
write nothing outside the folder, read no row through a link, fail only the cell an entry
concerns (one line in its row) and never show a traceback. Synthetic data, one epoch.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from harness.analysis.figures import figure_path
from harness.config.suite import load_suite
from harness.fsio import LinkRefused, atomic_path, open_lock
from harness.results import store
from tests.conftest import run_cli

SUITE = """\
name: trust
dataset: {name: synthetic, train_size: 64, test_size: 32}
models:
  small: {name: small_cnn, width: 4}
optimizers:
  momentum: {kind: momentum, lr: 0.05, momentum: 0.9}
schedule: {epochs: 1, milestones: [], factor: 2, batch_size: 32}
schedules:
  decaying: {realization: lr}
training: {ghost_batch_size: 16}
execution: {eval_batch_size: 32}
experiments:
  - name: grid
    optimizers: [momentum]
    schedules: [decaying]
    seeds: [0, 1, 2, 3, 4, 5, 6]
"""
ENV = {"OMP_NUM_THREADS": "1"}
VICTIM = "the victim's own file\n"


def _suite(folder: Path) -> Path:
    path = folder / "trust.yaml"
    path.write_text(textwrap.dedent(SUITE))
    return path


def _no_traceback(proc) -> None:
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory):
    """One run of a 7-cell suite into a folder where six cells' entries were planted."""
    tmp = tmp_path_factory.mktemp("trust")
    suite = _suite(tmp)
    ids = [c.cell_id for c in load_suite(suite).cells]
    results, home = tmp / "R", tmp / "home"
    ckpt = results / "checkpoints"
    for sub in ("runs", "curves", "checkpoints"):
        (results / sub).mkdir(parents=True)
    home.mkdir()
    victims = {name: home / name for name in ("lock.txt", "flock.txt", "curve.txt", "row")}
    for v in victims.values():
        v.write_text(VICTIM)
    (ckpt / f"{ids[0]}.lock").symlink_to(victims["lock.txt"])  # the claim's text
    (ckpt / f"{ids[1]}.pt").symlink_to(home / "elsewhere.pt")  # dangling: a new checkpoint
    (ckpt / f"{ids[2]}.lock").mkdir()  # a folder where the claim goes
    (ckpt / f"{ids[3]}.lock").symlink_to("/dev/null")
    (ckpt / f".{ids[4]}.flock").symlink_to(victims["flock.txt"])  # the kernel lock's file
    (results / "curves" / f"{ids[5]}.parquet").symlink_to(victims["curve.txt"])
    # Readers: a row file pointing elsewhere, and a name that is not UTF-8.
    (results / "runs" / "foreign.parquet").symlink_to(victims["row"])
    (results / "runs" / os.fsdecode(b"bad-\xff.parquet")).write_bytes(b"not parquet")
    proc = run_cli("run", str(suite), "--results", str(results), "--device", "cpu", env=ENV)
    return proc, ids, results, home, victims, suite


def test_planted_links_write_nothing_outside_and_fail_only_their_cells(planted) -> None:
    proc, ids, results, home, victims, _ = planted
    _no_traceback(proc)
    assert proc.returncode == 1, proc.stderr[-3000:]  # failed cells, as ever: rerun to retry
    for v in victims.values():
        assert v.read_text() == VICTIM  # not overwritten, not truncated
    assert sorted(p.name for p in home.iterdir()) == sorted(victims)  # no elsewhere.pt
    runs = store.scan_runs(results).frame.set_index("cell_id")
    assert runs.loc[ids[6], "status"] == "ok"  # the untouched cell trained
    for i, name in [(0, ".lock"), (1, ".pt"), (2, ".lock"), (3, ".lock"), (4, ".flock")]:
        assert runs.loc[ids[i], "status"] == "failed", i
        error = runs.loc[ids[i], "error"]
        assert f"{ids[i]}{name}" in error and "\n" not in error, error
        assert f"fail  {ids[i]}" in proc.stdout + proc.stderr
    assert "symbolic link" in runs.loc[ids[0], "error"]
    assert "not a regular file" in runs.loc[ids[2], "error"]
    assert runs.loc[ids[5], "status"] == "failed"
    assert "symbolic link" in runs.loc[ids[5], "error"]
    assert (results / "curves" / f"{ids[5]}.parquet").is_symlink()  # left as it was found
    # The planted links themselves stay (the user sees them named and removes them).
    assert (results / "checkpoints" / f"{ids[0]}.lock").is_symlink()


def test_a_stray_row_file_is_moved_aside_with_a_warning_not_read(planted) -> None:
    proc, _, results, _, victims, _ = planted
    out = proc.stdout + proc.stderr
    assert "foreign.parquet: unreadable (a symbolic link" in out
    assert "bad-\\xff.parquet: unreadable (its file name is not valid UTF-8" in out
    names = [os.fsencode(p.name) for p in (results / "runs").iterdir()]
    assert not any(n.endswith(b".parquet") and n.startswith((b"bad-", b"foreign")) for n in names)
    assert victims["row"].read_text() == VICTIM


def test_report_skips_linked_rows_and_writes_no_output_through_a_link(planted) -> None:
    _, _, results, home, _, _ = planted
    (results / "runs" / "again.parquet").symlink_to(home / "row")
    (results / "runs" / os.fsdecode(b"again-\xfe.parquet")).write_bytes(b"x")
    os.mkfifo(results / "runs" / "pipe.parquet")  # opening it would block the reader
    proc = run_cli("report", str(results), timeout=300)
    _no_traceback(proc)
    assert proc.returncode == 0, proc.stderr
    assert "pipe.parquet: not a readable results file (not a regular file)" in proc.stderr
    assert "again.parquet: not a readable results file (a symbolic link" in proc.stderr
    assert "again-\\xfe.parquet" in proc.stderr and "not valid UTF-8" in proc.stderr
    victim = home / "report-victim.md"
    victim.write_text(VICTIM)
    (results / "report.md").symlink_to(victim)
    proc = run_cli("report", str(results), "--out", str(results / "report.md"))
    _no_traceback(proc)
    assert proc.returncode == 2 and victim.read_text() == VICTIM
    errors = [line for line in proc.stderr.splitlines() if not line.startswith("warning: ")]
    assert len(errors) == 1 and "report.md: is a symbolic link" in errors[0], proc.stderr
    # A figure file planted as a link in the figures folder of the results folder.
    figures = results / "figs"
    figures.mkdir()
    fig = figure_path(figures, "trust", "grid", "loss")
    fig.symlink_to(victim)
    proc = run_cli("report", str(results), "--figures", str(figures))
    _no_traceback(proc)
    assert proc.returncode == 2 and victim.read_text() == VICTIM
    assert f"{fig.name}: is a symbolic link" in proc.stderr


def test_a_linked_subfolder_of_the_results_folder_is_refused_before_training(
    tmp_path: Path,
) -> None:
    suite = _suite(tmp_path)
    first = load_suite(suite).cells[0].cell_id
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for sub in ("runs", "checkpoints", "curves", "logs"):
        results = tmp_path / f"R-{sub}"
        results.mkdir()
        (results / sub).symlink_to(elsewhere)
        proc = run_cli("run", str(suite), "--results", str(results), "--only", first)
        _no_traceback(proc)
        assert proc.returncode == 2, proc.stderr
        assert f"R-{sub}/{sub}: is a symbolic link, not a folder" in proc.stderr
        assert proc.stderr.count("\n") == 1
    assert not any(elsewhere.iterdir())


def test_the_rule_in_fsio_covers_temporaries_folders_and_locks(tmp_path: Path) -> None:
    results = tmp_path / "R"
    (results / "logs").mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.write_text(VICTIM)
    (results / "logs" / "x.log").symlink_to(victim)
    log = results / "logs" / "x.log"
    with (
        pytest.raises(LinkRefused, match=r"x\.log: is a symbolic link"),
        atomic_path(log, inside=results) as tmp,
    ):
        tmp.write_text("log")
    (results / "sub").symlink_to(tmp_path)
    into = results / "sub" / "victim"
    with (
        pytest.raises(LinkRefused, match="sub: is a symbolic link, not a folder"),
        atomic_path(into, inside=results) as tmp,
    ):
        tmp.write_text("x")
    (results / "lock").symlink_to(victim)
    with pytest.raises(LinkRefused, match="lock: is a symbolic link"):
        open_lock(results / "lock", inside=results)
    assert victim.read_text() == VICTIM
    # The results folder itself may be a link (the user named it); writes land inside it.
    (tmp_path / "alias").symlink_to(results)
    with atomic_path(tmp_path / "alias" / "runs" / "a.txt", inside=tmp_path / "alias") as tmp:
        tmp.write_text("ok")
    assert (results / "runs" / "a.txt").read_text() == "ok"
    assert not [p for p in (results / "runs").iterdir() if p.name.endswith(".tmp")]


def test_a_long_experiment_name_is_one_line_and_figure_names_fit(tmp_path: Path) -> None:
    path = tmp_path / "long.yaml"
    path.write_text(textwrap.dedent(SUITE).replace("name: grid", "name: " + "x" * 300))
    proc = run_cli("plan", str(path))
    _no_traceback(proc)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "a name of 300 characters; use 1-100" in proc.stderr
    assert "long.yaml:13: experiments.0.name:" in proc.stderr  # the file, line and field
    # Rows on disk may carry any name: the figure's file name still fits (and stays distinct).
    a = figure_path(tmp_path, "s" * 300, "e" * 300 + "a", "accuracy")
    b = figure_path(tmp_path, "s" * 300, "e" * 300 + "b", "accuracy")
    assert len(a.name.encode()) <= 255 and a != b
    assert figure_path(tmp_path, "smoke", "grid", "loss").name == "smoke-grid-loss.png"


def test_data_cifar10_into_a_file_or_an_unwritable_folder_is_one_line(tmp_path: Path) -> None:
    file = tmp_path / "file"
    file.write_text("x")
    for dest, says in [(file, "exists and is not a folder"), (file / "sub", "cannot write")]:
        proc = run_cli("data", "cifar10", str(dest))
        _no_traceback(proc)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert says in proc.stderr and str(dest) in proc.stderr
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        proc = run_cli("data", "cifar10", str(locked))
        assert proc.returncode == 2 and "cannot write there" in proc.stderr, proc.stderr
    assert file.read_text() == "x"


def test_an_image_over_max_image_pixels_is_skipped_and_counted(tmp_path: Path) -> None:
    from PIL import Image

    from tests.test_imagenet_run import CLASSES, make_folder, write_suite

    root = make_folder(tmp_path / "data")  # 24 training images of at most 115x79 pixels
    big = root / "imagenet" / "train" / CLASSES[0] / "huge.png"
    Image.new("RGB", (120, 120), (9, 9, 9)).save(big)  # 14400 pixels: "huge" under 10000
    suite = write_suite(tmp_path)
    common = ("--results", str(tmp_path / "r"), "--device", "cpu", "--data", str(root))
    resnet = [c.cell_id for c in load_suite(suite).cells if c.model.name == "resnet50"]
    common += ("--only", resnet[0])
    # Under the default limit the image is one of 25 readable images: N differs, one line.
    proc = run_cli("run", str(suite), *common)
    _no_traceback(proc)
    assert proc.returncode == 2 and "25 readable images" in proc.stderr, proc.stderr
    limit = "--set", "execution.max_image_pixels=10000"
    proc = run_cli("run", str(suite), *common, *limit)
    _no_traceback(proc)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "skipped 1 of 25 images, using N = 24" in proc.stderr
    assert "huge.png (120x120 = 14400 pixels, over execution.max_image_pixels (10000))" in (
        proc.stderr
    )
    runs = store.scan_runs(tmp_path / "r").frame
    assert list(runs["status"]) == ["ok"] and list(runs["cell_id"]) == resnet[:1]
    proc = run_cli("plan", str(suite), "--set", "execution.max_image_pixels=0")
    assert proc.returncode == 2 and "max_image_pixels" in proc.stderr, proc.stderr


def test_the_decoder_refuses_an_image_over_the_limit_before_decoding(tmp_path: Path) -> None:
    from PIL import Image

    from harness.data.image_transforms import ImageTransform, UnreadableImageError

    path = tmp_path / "a.png"
    Image.new("RGB", (40, 30)).save(path)
    assert ImageTransform(16, False, max_pixels=1200)(path, None).shape == (3, 16, 16)
    with pytest.raises(UnreadableImageError, match=r"40x30 = 1200 pixels, over .* \(1199\)"):
        ImageTransform(16, False, max_pixels=1199)(path, None)
