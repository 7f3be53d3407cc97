"""Suites: expansion into cells, stable ids, and one clear line for every kind of bad input."""

from __future__ import annotations

import dataclasses
import json
import textwrap
from pathlib import Path

import pytest

from harness.config.suite import load_suite, select
from harness.errors import UserError
from tests.conftest import SUITES

MINIMAL = """\
name: tiny
dataset: {name: synthetic, train_size: 1000, test_size: 100}
models:
  small: {name: small_cnn, width: 8}
optimizers:
  momentum: {kind: momentum, lr: 0.1, momentum: 0.9}
schedule:
  epochs: 10
  milestones: [4, 8]
  factor: 2
  batch_size: 32
schedules:
  decaying: {realization: lr}
  increasing: {realization: batch}
training: {ghost_batch_size: 16}
experiments:
  - name: grid
    optimizers: [momentum]
    schedules: [decaying, increasing]
    seeds: [0, 1]
"""


def write(tmp_path: Path, text: str, name: str = "suite.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_grid_expands_by_product_with_stable_ids(tmp_path):
    suite = load_suite(write(tmp_path, MINIMAL))
    assert len(suite.cells) == 4
    assert {(c.schedule_name, c.seed) for c in suite.cells} == {
        ("decaying", 0),
        ("decaying", 1),
        ("increasing", 0),
        ("increasing", 1),
    }
    again = load_suite(write(tmp_path, MINIMAL, "copy.yaml"))
    assert [c.cell_id for c in suite.cells] == [c.cell_id for c in again.cells]
    assert len({c.cell_id for c in suite.cells}) == 4


def test_ids_hash_what_runs_not_what_it_is_called(tmp_path):
    base = load_suite(write(tmp_path, MINIMAL))
    renamed = load_suite(write(tmp_path, MINIMAL.replace("decaying", "original"), "r.yaml"))
    assert {c.cell_id for c in base.cells} == {c.cell_id for c in renamed.cells}
    changed = load_suite(write(tmp_path, MINIMAL.replace("lr: 0.1", "lr: 0.2"), "c.yaml"))
    assert not {c.cell_id for c in base.cells} & {c.cell_id for c in changed.cells}


def test_identical_cells_in_one_suite_are_one_cell():
    suite = load_suite(SUITES / "cifar.yaml")
    # 4 optimizers x 3 schedules in Sec 5.1, the effective-lr SGD and AdamW extras' 3
    # schedules each, plus the two new schedules of Sec 5.2, each with seeds 0 and 1; Sec
    # 5.2's "original" and "increasing batch" are Sec 5.1's momentum cells.
    assert len(suite.cells) == (4 * 3 + 3 + 3 + 2) * 2
    aliased = {c.label: c.aliases for c in suite.cells if c.aliases}
    assert aliased == {
        f"sec5.1/momentum/{s}/seed{n}": (f"sec5.2/momentum/{s}/seed{n}",)
        for s in ("decaying_lr", "increasing_batch")
        for n in (0, 1)
    }
    original = next(c for c in suite.cells if c.label.startswith("sec5.1/momentum/decaying"))
    assert original.paper is not None and original.paper.test_acc == 0.943


def test_select_matches_ids_labels_and_aliases():
    cells = load_suite(SUITES / "cifar.yaml").cells
    assert len(select(cells, "sec5.2/*")) == 4 * 2  # 4 schedules x 2 seeds
    assert len(select(cells, "/adam/")) == 3 * 2
    assert len(select(cells, "adam")) == 2 * 3 * 2  # a substring: the AdamW extra's too
    assert select(cells, cells[0].cell_id) == (cells[0],)


def test_every_shipped_suite_loads():
    for path in sorted(SUITES.glob("*.yaml")):
        assert load_suite(path).cells, path


def test_cosine_and_warmup_schedules_plan(tmp_path):
    text = MINIMAL.replace(
        "  milestones: [4, 8]\n  factor: 2\n", "  shape: cosine\n  warmup_epochs: 2\n"
    ).replace("increasing: {realization: batch}", "increasing: {realization: batch, b_max: 256}")
    suite = load_suite(write(tmp_path, text))
    plan = next(c for c in suite.cells if c.schedule_name == "increasing").plan
    assert max(p.batch_size for p in plan.phases) == 256
    assert all(p.batch_size % 16 == 0 for p in plan.phases)


# ---------------------------------------------------------------------------------------------
# Bad input, through the real CLI process: one line, exit 2, no traceback, field and line named

BAD = [
    (
        "unknown key",
        ("milestones: [4, 8]", "milestone: [4, 8]"),
        ":9: schedule.milestone",
        "unknown key 'milestone'",
    ),
    ("wrong type", ("epochs: 10", "epochs: ten"), ":8: schedule.epochs", "valid integer"),
    (
        "batch not a multiple of ghost",
        ("batch_size: 32", "batch_size: 40"),
        ":11: schedule.batch_size",
        "multiple of the ghost batch size 16; use 32",
    ),
    ("milestones out of order", ("[4, 8]", "[8, 4]"), "schedule.milestones", "strictly increasing"),
    (
        "milestone past the last epoch",
        ("[4, 8]", "[4, 10]"),
        "schedule.milestones",
        "not before the last epoch",
    ),
    ("negative lr", ("lr: 0.1", "lr: -0.1"), ":6: optimizers.momentum.lr", "greater than 0"),
    (
        "momentum >= 1",
        ("momentum: 0.9}", "momentum: 1.0}"),
        ":6: optimizers.momentum.momentum",
        "less than 1",
    ),
    (
        "b_max below the initial batch",
        ("increasing: {realization: batch}", "increasing: {realization: batch, b_max: 16}"),
        ":14: schedules.increasing.b_max",
        "below the initial batch size 32",
    ),
    (
        "unknown optimizer name",
        ("optimizers: [momentum]", "optimizers: [adamw]"),
        ":18: experiments.0.optimizers.0",
        "unknown name 'adamw'",
    ),
    ("unknown model", ("name: small_cnn", "name: resnet9"), ":4: models.small", "small_cnn"),
    (
        "batch beyond the training set",
        ("factor: 2", "factor: 40"),
        "schedules.increasing.b_max",
        "exceeds the training set",
    ),
]


@pytest.mark.parametrize(("case", "edit", "where", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_suite_gets_one_clear_line(tmp_path, cli, case, edit, where, message):
    assert edit[0] in MINIMAL, case
    path = write(tmp_path, MINIMAL.replace(edit[0], edit[1], 1))
    result = cli("plan", str(path))
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith(f"error: {path}"), lines[0]
    assert where in lines[0], lines[0]
    assert message in lines[0], lines[0]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such suite file"),
        ("name: [unclosed\n", "not valid YAML"),
        ("just a string\n", "must be a YAML mapping"),
        (b"\xff\xfe\x00binary", "not a text file"),
    ],
    ids=["missing file", "broken yaml", "not a mapping", "binary"],
)
def test_unreadable_suite_gets_one_clear_line(tmp_path, cli, content, message):
    path = tmp_path / "suite.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    result = cli("plan", str(path))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert message in result.stderr and str(path) in result.stderr


def test_load_suite_raises_user_error(tmp_path):
    with pytest.raises(UserError, match=r"schedule\.epochs"):
        load_suite(write(tmp_path, MINIMAL.replace("epochs: 10", "epochs: -1")))


def test_plan_json_through_the_cli(cli):
    result = cli("plan", "suites/cifar.yaml", "--json")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["suite"] == "cifar"
    cell = next(c for c in plan["cells"] if c["schedule"] == "increased_momentum")
    assert cell["updates"] == sum(p["updates"] for p in cell["phases"]) == 2160
    assert cell["train_size"] == 50000 and cell["epochs"] == 200
    assert [p["batch_size"] for p in cell["phases"]] == [3200, 5120, 5120, 5120]
    assert {
        "start_epoch",
        "end_epoch",
        "lr",
        "batch_size",
        "momentum",
        "noise_scale",
        "updates",
    } <= set(cell["phases"][0])


def test_plan_does_not_import_torch(cli):
    code = (
        "import sys; from harness.cli import app; sys.argv=['harness','plan',"
        "'suites/imagenet.yaml']\ntry: app()\nexcept SystemExit: pass\n"
        "assert 'torch' not in sys.modules, 'plan imported torch'"
    )
    import subprocess
    import sys

    from tests.conftest import REPO

    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "14040" in done.stdout


# ---------------------------------------------------------------------------------------------
# Untrusted suite files: unsafe names, alias bombs, huge files and absurd numbers are refused
# with one line, fast

BOMB = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")
)

UNTRUSTED = [
    ("name with ..", MINIMAL.replace("name: tiny", "name: ../../x"), ":1: name", "safe suite name"),
    ("absolute name", MINIMAL.replace("name: tiny", "name: /tmp/x"), ":1: name", "safe suite name"),
    ("empty name", MINIMAL.replace("name: tiny", 'name: ""'), ":1: name", "safe suite name"),
    ("alias bomb", BOMB, ":1:", "anchors and aliases"),
    ("self-referencing alias", "a: &a [*a]\n", ":1:", "anchors and aliases"),
    ("python tag", "name: !!python/object:os.system x\n", ":1:", "not allowed"),
    ("deep nesting", "a: " + "[" * 200 + "]" * 200 + "\n", ":1:", "levels deep"),
    ("huge file", "name: x\n#" + "x" * (1 << 20) + "\n", "", "larger than 1 MiB"),
    (
        "seed beyond 64 bits",
        MINIMAL.replace("seeds: [0, 1]", "seeds: [100000000000000000000]"),
        "experiments.0.seeds.0",
        "less than or equal to 9223372036854775807",
    ),
    ("negative seed", MINIMAL.replace("seeds: [0, 1]", "seeds: [-1]"), "seeds.0", "greater"),
    ("epochs 1e11", MINIMAL.replace("epochs: 10", "epochs: 1e11"), ":8: schedule.epochs", "100000"),
    ("lr inf", MINIMAL.replace("lr: 0.1", "lr: .inf"), "optimizers.momentum.lr", "finite"),
    ("lr nan", MINIMAL.replace("lr: 0.1", "lr: .nan"), "optimizers.momentum.lr", "finite"),
    ("factor inf", MINIMAL.replace("factor: 2", "factor: .inf"), "schedule.factor", "finite"),
    (
        "factor overflowing",
        MINIMAL.replace("factor: 2", "factor: 1.0e+300"),
        "schedule.factor",
        "overflows",
    ),
    (
        "huge batch",
        MINIMAL.replace("batch_size: 32", "batch_size: 100000000000"),
        ":11: schedule.batch_size",
        "less than or equal to",
    ),
    (
        "huge train size",
        MINIMAL.replace("train_size: 1000", "train_size: 100000000000"),
        "dataset.train_size",
        "less than or equal to",
    ),
    (
        "bad WRN depth",
        MINIMAL.replace("{name: small_cnn, width: 8}", "{name: wrn, depth: 15}"),
        ":4: models.small.depth",
        "6n+4",
    ),
    ("duplicate key", MINIMAL + "name: again\n", ":", "duplicate key"),
]


@pytest.mark.parametrize(
    ("case", "text", "where", "message"), UNTRUSTED, ids=[u[0] for u in UNTRUSTED]
)
def test_untrusted_suite_gets_one_clear_line(tmp_path, cli, case, text, where, message):
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    result = cli("plan", str(path), timeout=60)
    assert result.returncode == 2, (case, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith(f"error: {path}"), lines[0]
    assert where in lines[0] and message in lines[0], lines[0]


# ---------------------------------------------------------------------------------------------
# Overrides: --set KEY=VALUE, applied before validation


def test_overrides_change_values_before_validation():
    suite = load_suite(
        SUITES / "smoke.yaml",
        overrides=("training.weight_decay=0", "experiments.0.seeds=[0,1,2]", "schedule.epochs=6"),
    )
    assert suite.spec.training.weight_decay == 0
    assert sorted({c.seed for c in suite.cells}) == [0, 1, 2] and len(suite.cells) == 9
    plain = {c.label: c.cell_id for c in load_suite(SUITES / "smoke.yaml").cells}
    changed = {c.label: c.cell_id for c in suite.cells}
    assert not set(plain.values()) & set(changed.values())  # weight decay is in the id
    same = load_suite(SUITES / "smoke.yaml", overrides=("schedule.epochs=6",))
    assert {c.label: c.cell_id for c in same.cells} == plain


def test_overrides_reach_names_with_dots_and_free_form_sections():
    suite = load_suite(
        SUITES / "imagenet.yaml",
        overrides=("schedules.momentum_0.9.b_max=32768", "experiments.0.training.eval_every=2"),
    )
    capped = next(c for c in suite.cells if c.schedule_name == "momentum_0.9")
    assert max(p.batch_size for p in capped.plan.phases) == 32768
    assert suite.cells[0].training.eval_every == 2


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("training.weightdecay=0", "training has no key 'weightdecay'; keys here: ghost_batch"),
        ("training.weight_decay=-1", "training.weight_decay: Input should be greater than"),
        ("training.weight_decay", "expected KEY=VALUE"),
        ("optimizers.adamw.lr=1", "optimizers has no 'adamw' (defined: momentum)"),
        ("experiments.3.seeds=[1]", "experiments has 1 entries; use an index in 0..0"),
        ("experiments.0.training.ghost=64", "unknown key 'ghost'"),
        ("models.small_cnn.depth=16", "models.small_cnn.depth: unknown key 'depth'"),
        ("schedule.milestones=[1,", "not valid YAML"),
        ("name=../x", "not a safe suite name"),
        ("description.x=1", "holds a single value"),
    ],
)
def test_bad_override_gets_one_line_naming_it(override, message):
    with pytest.raises(UserError) as caught:
        load_suite(SUITES / "smoke.yaml", overrides=(override,))
    text = str(caught.value)
    assert text.startswith(f"--set {override}") and len(text.splitlines()) == 1, text
    assert message in text, text


def test_an_override_that_breaks_a_file_value_is_named_with_it():
    with pytest.raises(UserError) as caught:
        load_suite(SUITES / "smoke.yaml", overrides=("schedule.epochs=3",))
    text = str(caught.value)
    assert "smoke.yaml:24: schedule.milestones" in text
    assert text.endswith("(with --set schedule.epochs=3)"), text


def test_config_imports_only_core_errors_and_fsio():
    import ast

    from tests.conftest import REPO

    allowed = ("harness.core", "harness.config", "harness.errors", "harness.fsio")
    for path in sorted((REPO / "harness" / "config").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                ok = not name.startswith("harness") or name.startswith(allowed)
                assert ok, f"{path.name} imports {name}"


def test_set_overrides_reach_the_command_line(cli):
    """`--set KEY=VALUE` on plan (as on run and check): applied, or one line naming it."""
    out = cli("plan", "suites/smoke.yaml", "--json", "--set", "experiments.0.seeds=[0,1,2]")
    assert out.returncode == 0, out.stderr
    assert len(json.loads(out.stdout)["cells"]) == 9
    bad = cli("plan", "suites/smoke.yaml", "--set", "schedule.epoch=4")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.startswith("error: --set schedule.epoch=4: ")
    assert len(bad.stderr.strip().splitlines()) == 1


def test_max_micro_batch_has_one_rule_from_the_suite_and_the_command_line(tmp_path):
    """A max_micro_batch that is not whole ghost slices is refused wherever it comes from,
    with one message naming where it came from; a multiple is taken as it is."""
    from harness.app import jobs

    rule = r"24: must be a positive multiple of the ghost batch size \(16\)"
    path = write(tmp_path, MINIMAL + "execution: {max_micro_batch: 24}\n")
    with pytest.raises(UserError, match=r"suite.yaml:\d+: execution\.max_micro_batch: " + rule):
        load_suite(path)
    plain = write(tmp_path, MINIMAL, name="plain.yaml")
    with pytest.raises(UserError, match=r"--set execution.max_micro_batch=24 .*" + rule):
        load_suite(plain, overrides=["execution.max_micro_batch=24"])
    suite = load_suite(plain, overrides=["execution.max_micro_batch=32"])
    assert all(c.execution.max_micro_batch == 32 for c in suite.cells)
    with pytest.raises(UserError, match=r"--max-micro-batch " + rule):
        jobs.execution(suite.spec.execution, suite.cells, max_micro_batch=24)
    taken = jobs.execution(suite.spec.execution, suite.cells, max_micro_batch=48)
    assert taken == dataclasses.replace(suite.spec.execution, max_micro_batch=48)


def test_an_execution_knob_is_one_field_outside_the_cell_id(tmp_path):
    """execution.cudnn_benchmark (docs/ARCHITECTURE.md, "How to add a knob"): read from the
    suite or --set into the one Execution type, checked there, and no cell id moves."""
    plain = load_suite(write(tmp_path, MINIMAL, name="plain.yaml"))
    off = load_suite(write(tmp_path, MINIMAL + "execution: {cudnn_benchmark: false}\n"))
    assert plain.spec.execution.cudnn_benchmark is True
    assert off.spec.execution.cudnn_benchmark is False
    assert [c.cell_id for c in off.cells] == [c.cell_id for c in plain.cells]
    with pytest.raises(UserError, match=r"execution\.cudnn_benchmark: .*valid boolean"):
        load_suite(write(tmp_path, MINIMAL), overrides=["execution.cudnn_benchmark=maybe"])


def test_the_captured_step_is_an_execution_setting_outside_the_cell_id(tmp_path):
    """execution.compile_mode: the captured step changes no number, so no cell id; it needs
    compile: true, and a suite that forgets it is one line naming the field."""
    plain = load_suite(write(tmp_path, MINIMAL, name="plain.yaml"))
    graphs = load_suite(
        write(tmp_path, MINIMAL),
        overrides=["execution.compile=true", "execution.compile_mode=reduce-overhead"],
    )
    assert graphs.spec.execution.graphs and not plain.spec.execution.graphs
    assert [c.cell_id for c in graphs.cells] == [c.cell_id for c in plain.cells]
    with pytest.raises(UserError, match=r"execution.compile_mode: .*needs compile: true"):
        load_suite(write(tmp_path, MINIMAL), overrides=["execution.compile_mode=reduce-overhead"])
