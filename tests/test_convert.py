"""`harness convert`: the paper's schedules from their recipes, bad recipes, the written suite,
and the own-loop example taking exactly the steps `harness plan` counts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.app.convert import make_recipe
from tests.conftest import REPO

CIFAR = {
    "epochs": 200,
    "train_size": 50_000,
    "batch_size": 128,
    "lr": 0.1,
    "momentum": 0.9,
    "milestones": [60, 120, 160],
    "factor": 5,
}
IMAGENET = {
    "epochs": 90,
    "train_size": 1_281_167,
    "batch_size": 8192,
    "lr": 3.0,
    "momentum": 0.9,
    "milestones": [30, 60, 80],
    "factor": 10,
}


def _updates(recipe: dict) -> dict[str, int]:
    return {name: plan.updates for name, plan in make_recipe(recipe).plans().items()}


def _flags(recipe: dict) -> list[str]:
    out = []
    for key, value in recipe.items():
        text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
        out += ["--" + key.replace("_", "-"), text]
    return out


def test_sec_5_2_cifar10_counts_from_the_recipe():
    n = CIFAR["train_size"]
    counts = _updates(CIFAR)
    assert counts["lr"] == 200 * (n // 128)  # the paper's "~80000"
    assert counts["batch"] == 60 * (n // 128) + 60 * (n // 640) + 40 * (n // 3200) + 40 * (
        n // 16000
    )
    assert (counts["lr"], counts["batch"]) == (78000, 28800)

    raised_lr = make_recipe({**CIFAR, "new_lr": 0.5, "b_max": 5120})
    assert raised_lr.start_batch == 640
    assert raised_lr.plan("batch").updates == 60 * (n // 640) + 60 * (n // 3200) + 80 * (n // 5120)
    assert raised_lr.plan("batch").updates == 6300  # the paper's "under 6500"

    raised_m = make_recipe({**CIFAR, "new_lr": 0.5, "new_momentum": 0.98, "b_max": 5120})
    assert raised_m.start_batch == 3200
    assert raised_m.plan("batch").updates == 60 * (n // 3200) + 140 * (n // 5120) == 2160


def test_sec_5_3_imagenet_counts_from_the_recipe():
    n = IMAGENET["train_size"]
    counts = _updates(IMAGENET)
    assert counts["lr"] == 90 * (n // 8192) == 14040  # "just over 14000"
    assert counts["hybrid"] == 30 * (n // 8192) + 60 * (n // 81920) == 5580
    uncapped = make_recipe(IMAGENET)
    assert uncapped.realizations == ("lr", "hybrid")  # B would reach 8192000 > N
    assert "set b_max" in uncapped.infeasible()["batch"]
    capped = _updates({**IMAGENET, "b_max": 65536})
    assert capped["batch"] == 30 * (n // 8192) + 60 * (n // 65536) == 5820


def test_convert_prints_the_realizations_side_by_side(cli):
    out = cli("convert", *_flags(CIFAR), "--new-lr", "0.5", "--b-max", "5120")
    assert out.returncode == 0, out.stderr
    assert "B 640 (B ∝ lr)" in out.stdout
    header = next(line for line in out.stdout.splitlines() if "decaying lr" in line)
    assert header.index("decaying lr") < header.index("hybrid") < header.index("increasing")
    totals = out.stdout.splitlines()[-1]
    assert totals.split()[:2] == ["updates", "|"] and "6300" in totals


def test_a_recipe_file_and_its_suite_plan_the_same_counts(cli, tmp_path: Path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "".join(f"{k}: {json.dumps(v)}\n" for k, v in {**CIFAR, "momentum": 0.9}.items())
    )
    suite = tmp_path / "sec52.yaml"
    out = cli("convert", str(recipe), "--new-lr", "0.5", "--b-max", "5120", "--out", str(suite))
    assert out.returncode == 0, out.stderr
    planned = cli("plan", str(suite), "--json")
    assert planned.returncode == 0, planned.stderr
    by_schedule = {c["schedule"]: c["updates"] for c in json.loads(planned.stdout)["cells"]}
    expected = _updates({**CIFAR, "new_lr": 0.5, "b_max": 5120})
    assert by_schedule == {
        "decaying_lr": expected["lr"],
        "hybrid": expected["hybrid"],
        "increasing_batch": expected["batch"],
    }


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"batch_size": 60000}, "batch_size"),
        ({"factor": 1}, "factor"),
        ({"b_max": 64}, "b_max"),
        ({"lr": "nan"}, "lr"),
        ({"lr": "inf"}, "lr"),
        ({"milestones": [120, 60]}, "milestones"),
        ({"new_lr": 0.3333}, "new_lr"),
    ],
)
def test_a_bad_recipe_is_one_line_naming_the_field(cli, change, field):
    out = cli("convert", *_flags({**CIFAR, **change}))
    assert out.returncode == 2
    assert out.stderr.startswith(f"error: {field}: ") and out.stderr.count("\n") == 1
    assert "Traceback" not in out.stderr


def test_an_unknown_recipe_key_is_named(cli, tmp_path: Path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("epochs: 10\nbatchsize: 128\n")
    out = cli("convert", str(recipe))
    assert out.returncode == 2
    assert out.stderr.startswith("error: batchsize: not a recipe key")


def test_a_cosine_recipe_has_no_hybrid_and_plans(cli, tmp_path: Path):
    suite = tmp_path / "cos.yaml"
    recipe = {k: v for k, v in CIFAR.items() if k not in ("milestones", "factor")}
    flags = [*_flags(recipe), "--cosine", "--warmup-epochs", "5", "--b-max", "5120"]
    out = cli("convert", *flags, "--out", str(suite))
    assert out.returncode == 0, out.stderr
    assert "hybrid" not in out.stdout
    planned = json.loads(cli("plan", str(suite), "--json").stdout)
    got = {c["schedule"]: c["updates"] for c in planned["cells"]}
    want = _updates({**recipe, "shape": "cosine", "warmup_epochs": 5, "b_max": 5120})
    assert got == {"decaying_lr": want["lr"], "increasing_batch": want["batch"]}
    assert got["increasing_batch"] < got["decaying_lr"]


# The own-loop example: a small recipe on the first images of CIFAR-10.
SMALL = {
    "epochs": 3,
    "train_size": 1024,
    "batch_size": 128,
    "lr": 0.05,
    "momentum": 0.9,
    "milestones": [1, 2],
    "factor": 2,
}


def _example(*args: str, root: Path) -> dict:
    out = subprocess.run(
        [sys.executable, str(REPO / "examples" / "own_loop.py"), *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "HARNESS_DATA": str(root)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


def test_the_example_takes_the_steps_harness_plan_counts_and_resumes(
    cli, cifar_root: Path, tmp_path: Path
):
    suite = tmp_path / "small.yaml"
    assert cli("convert", *_flags(SMALL), "--out", str(suite)).returncode == 0
    planned = json.loads(cli("plan", str(suite), "--json").stdout)
    want = {c["schedule"]: c["updates"] for c in planned["cells"]}["increasing_batch"]

    flags = [*_flags({k: v for k, v in SMALL.items() if k != "milestones"}), "--test-size", "200"]
    flags += ["--milestones", *map(str, SMALL["milestones"]), "--realization", "batch"]
    checkpoint = ["--checkpoint", str(tmp_path / "ck.pt")]
    first = _example(*flags, *checkpoint, "--max-steps", "5", root=cifar_root)
    assert (first["steps"], first["finished"]) == (5, False)
    rest = _example(*flags, *checkpoint, root=cifar_root)
    assert rest["finished"] and rest["total_steps"] == rest["plan_updates"] == want
    assert first["steps"] + rest["steps"] == want
