"""`harness convert`: the paper's schedules from their recipes, bad recipes, the written suite,
and the own-loop example taking exactly the steps `harness plan` counts."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.app.convert import make_recipe, side_by_side
from harness.core.schedule_request import ScheduleRequest, resolve_schedule
from harness.errors import UserError
from tests.conftest import REPO, TINY_BN_NET

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
    out = cli("convert", str(recipe), "--new-lr", "0.5", "--b-max", "5120", "--out", str(suite),
              "--model", "wrn")  # fmt: skip
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
    out = cli("convert", *flags, "--out", str(suite), "--model", "wrn")
    assert out.returncode == 0, out.stderr
    assert "hybrid" not in out.stdout
    planned = json.loads(cli("plan", str(suite), "--json").stdout)
    got = {c["schedule"]: c["updates"] for c in planned["cells"]}
    want = _updates({**recipe, "shape": "cosine", "warmup_epochs": 5, "b_max": 5120})
    assert got == {"decaying_lr": want["lr"], "increasing_batch": want["batch"]}
    assert got["increasing_batch"] < got["decaying_lr"]


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"new_lr": float("nan")}, "new_lr", "finite"),
        ({"new_lr": 0.3333}, "new_lr", "B = 426.624, not a whole number"),
        ({"new_lr": 60.0}, "new_lr", "exceeds the training set"),
        ({"new_momentum": 1.5}, "new_momentum", "[0, 1)"),
        ({"momentum": 0, "new_momentum": 0.95}, "new_momentum", "no momentum to change"),
        ({"momentum": 1.0}, "momentum", "[0, 1)"),
        ({"ghost_batch_size": 0}, "ghost_batch_size", "whole number"),
        ({"ghost_batch_size": 256}, "batch_size", "not a multiple of the ghost batch size 256"),
        ({"new_lr": 0.5, "ghost_batch_size": 256}, "new_lr", "B = 640, not a multiple"),
        ({"b_max": 5000}, "b_max", "use 4992"),
        ({"factor": 10, "b_max": 99_968}, "b_max", "set b_max <= 50000"),
        ({"warmup_epochs": 200}, "warmup_epochs", "below epochs"),
        ({"batch_drops": 4}, "batch_drops", "more than the 3 milestones"),
        ({"shape": "linear"}, "shape", "not one of"),
        ({"epochs": 2.5}, "epochs", "not a whole number"),
        ({"milestones": "60,x"}, "milestones", "whole epochs"),
    ],
)
def test_the_cores_rules_come_back_under_the_recipe_key(change, field, words):
    with pytest.raises(UserError, match=re.escape(words)) as caught:
        make_recipe({**CIFAR, **change})
    assert str(caught.value).startswith(f"{field}: ")


def test_the_plans_are_the_cores_for_the_same_request():
    recipe = make_recipe({**CIFAR, "new_lr": 0.5, "new_momentum": 0.98, "b_max": 5120})
    for name, plan in recipe.plans().items():
        request = ScheduleRequest(
            base_lr=0.1,
            base_momentum=0.9,
            base_batch_size=128,
            train_size=50_000,
            epochs=200,
            milestones=(60, 120, 160),
            factor=5.0,
            realization=name,  # type: ignore[arg-type]
            batch_drops=1 if name == "hybrid" else None,
            b_max=5120,
            lr=0.5,
            momentum=0.98,
            ghost=128,
        )
        assert plan == resolve_schedule(request).plan, name


def test_a_warmup_is_an_lr_ramp_at_b0_in_every_column():
    cosine = {k: v for k, v in CIFAR.items() if k not in ("milestones", "factor")}
    recipe = make_recipe({**cosine, "shape": "cosine", "warmup_epochs": 5, "b_max": 5120})
    for plan in recipe.plans().values():
        ramp = [plan.phase_at(e) for e in range(5)]
        assert [p.batch_size for p in ramp] == [128] * 5
        assert [p.lr for p in ramp] == sorted(p.lr for p in ramp) and ramp[0].lr < 0.1 / 5
    assert "an lr ramp at B0" in side_by_side(recipe)


_JUNK = {
    "epochs": st.one_of(st.integers(-1, 40), st.floats(), st.text(max_size=3)),
    "train_size": st.integers(0, 3000),
    "batch_size": st.one_of(st.integers(0, 600), st.just(True)),
    "lr": st.one_of(st.floats(), st.text(max_size=4)),
    "momentum": st.floats(-1, 1.5),
    "shape": st.sampled_from(["step", "cosine", "x"]),
    "milestones": st.one_of(st.lists(st.integers(-1, 45), max_size=4), st.text(max_size=6)),
    "factor": st.floats(),
    "warmup_epochs": st.integers(-1, 10),
    "b_max": st.integers(0, 5000),
    "new_lr": st.floats(0, 10),
    "new_momentum": st.floats(0, 1),
    "batch_drops": st.integers(-1, 5),
    "ghost_batch_size": st.integers(0, 300),
    "drop_last": st.one_of(st.booleans(), st.integers()),
}
_PLAUSIBLE = {
    "momentum": st.sampled_from([0, 0.5, 0.9, 0.99]),
    "shape": st.sampled_from(["step", "cosine"]),
    "milestones": st.lists(st.integers(1, 4), max_size=3, unique=True).map(sorted),
    "factor": st.sampled_from([2, 2.5, 5, 10]),
    "warmup_epochs": st.integers(0, 5),
    "b_max": st.integers(1, 40).map(lambda k: 128 * k),
    "new_lr": st.sampled_from([0.2, 0.25, 0.4, 1.0]),
    "new_momentum": st.sampled_from([0.9, 0.95, 0.98]),
    "batch_drops": st.integers(0, 3),
    "ghost_batch_size": st.sampled_from([1, 16, 32, 128]),
    "drop_last": st.booleans(),
}
_REQUIRED = {
    "epochs": st.integers(5, 40),
    "train_size": st.integers(256, 6000),
    "batch_size": st.sampled_from([16, 32, 64, 96, 128, 256]),
    "lr": st.sampled_from([0.05, 0.1]),
}


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.fixed_dictionaries({}, optional=_JUNK),
        st.fixed_dictionaries(_REQUIRED, optional=_PLAUSIBLE),
    )
)
def test_any_recipe_converts_or_is_one_user_error(values):
    """No recipe crashes: it gives plans whose lr / B is the lr column's, or a UserError."""
    try:
        recipe = make_recipe(values)
    except UserError as exc:
        assert re.match(r"[a-z_]+: ", str(exc)), exc
        return
    plans = recipe.plans()
    reference = plans["lr"]
    b0 = recipe.start_batch
    for plan in plans.values():
        for e in range(recipe.epochs):
            p, ref = plan.phase_at(e), reference.phase_at(e)
            assert p.batch_size % recipe.ghost == 0 and p.batch_size <= recipe.train_size
            assert abs(p.lr / p.batch_size - ref.lr / b0) <= 1e-12 * ref.lr / b0
    side_by_side(recipe)


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
    made = cli("convert", *_flags(SMALL), "--out", str(suite), "--model", "small_cnn")
    assert made.returncode == 0, made.stderr
    planned = json.loads(cli("plan", str(suite), "--json").stdout)
    want = {c["schedule"]: c["updates"] for c in planned["cells"]}["increasing_batch"]

    flags = [*_flags({k: v for k, v in SMALL.items() if k != "milestones"}), "--test-size", "200"]
    flags += ["--milestones", *map(str, SMALL["milestones"]), "--realization", "batch"]
    # With DataLoader workers, which fetch ahead: the checkpoint holds the steps taken.
    checkpoint = ["--checkpoint", str(tmp_path / "ck.pt"), "--workers", "2"]
    first = _example(*flags, *checkpoint, "--max-steps", "5", root=cifar_root)
    assert (first["steps"], first["finished"]) == (5, False)
    rest = _example(*flags, *checkpoint, root=cifar_root)
    assert rest["finished"] and rest["total_steps"] == rest["plan_updates"] == want
    assert first["steps"] + rest["steps"] == want


IMAGENET_256 = {**IMAGENET, "batch_size": 256, "lr": 0.1}


def test_convert_warns_when_the_batch_passes_n_over_10_and_g_drifts():
    from harness.app.convert import warnings_for

    lines = warnings_for(make_recipe(IMAGENET_256))
    assert any(
        "B reaches 256000 = 20% of N = 1281167" in w and "--b-max 128000" in w for w in lines
    )
    drift = [w for w in lines if "g differs" in w]
    assert drift and drift[0].startswith("increasing batch") and "-20.0%" in drift[0]
    capped = warnings_for(make_recipe({**IMAGENET_256, "b_max": 128000}))
    assert not any("B reaches" in w for w in capped)
    # A recipe whose batch stays far below N keeps g within 5 % everywhere: no word.
    small = {**CIFAR, "milestones": [60], "b_max": 640}
    assert warnings_for(make_recipe(small)) == []


def test_convert_out_needs_an_explicit_model_from_the_registry(cli, tmp_path: Path):
    from harness.app.convert import MODEL_ENTRIES
    from harness.models.registry import MODELS

    # The registry's image models, nothing else: a converted recipe is an image recipe (its
    # datasets are the kinds named by their sizes), so a model of token ids is not offered.
    image_models = sorted(name for name, m in MODELS.items() if m.channels is not None)
    assert sorted(MODEL_ENTRIES) == image_models
    suite = tmp_path / "in.yaml"
    flags = _flags(IMAGENET_256)
    missing = cli("convert", *flags, "--out", str(suite))
    assert missing.returncode == 2 and not suite.exists()
    assert missing.stderr.startswith("error: model: needed") and "--model" in missing.stderr
    assert all(name in missing.stderr for name in image_models)
    bad = cli("convert", *flags, "--out", str(suite), "--model", "vgg")
    assert bad.returncode == 2 and "vgg" in bad.stderr and "resnet50" in bad.stderr
    made = cli("convert", *flags, "--out", str(suite), "--model", "resnet50")
    assert made.returncode == 0, made.stderr
    assert "warning: increasing batch: B reaches 256000" in made.stderr
    assert "model: {name: resnet50}" in suite.read_text()
    assert cli("plan", str(suite)).returncode == 0


def test_convert_writes_a_suite_of_your_own_model_that_runs(cli, tmp_path):
    """--model file.py:build: the suite names the factory (never imported by convert or
    plan), and `harness run` builds and trains it, ghost batch norm and all."""
    (tmp_path / "net.py").write_text(TINY_BN_NET)
    recipe = {"epochs": 2, "train_size": 64, "batch_size": 16, "lr": 0.05, "momentum": 0.9,
              "milestones": [1], "factor": 2}  # fmt: skip
    suite = tmp_path / "mine.yaml"
    made = cli("convert", *_flags(recipe), "--out", str(suite), "--model", "net.py:build")
    assert made.returncode == 0, made.stderr
    assert 'model: {factory: "net.py:build"}' in suite.read_text()
    assert cli("plan", str(suite)).returncode == 0
    bad = cli("convert", *_flags(recipe), "--out", str(tmp_path / "x.yaml"), "--model", "net.py")
    assert bad.returncode == 2 and "pkg.module:build or file.py:build" in bad.stderr
    results = tmp_path / "results"
    run = cli("run", str(suite), "--results", str(results), "--device", "cpu",
              "--set", "training.ghost_batch_size=8", "--set", "dataset.name=synthetic",
              "--set", "dataset.test_size=32")  # fmt: skip
    assert run.returncode == 0, run.stderr
    runs = pd.read_parquet(results / "runs")
    assert set(runs["status"]) == {"ok"} and len(runs) == 3  # lr, hybrid, batch
    assert set(runs["model_source"]) == {str(tmp_path / "net.py")}
