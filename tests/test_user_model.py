"""A model from the user's code (`factory:`), and ghost batch norm for any model (issue 27)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

import harness
from harness.config.suite import FactorySpec, load_suite
from harness.core.factory_spec import FactoryRef, factory_problem
from harness.errors import UserError
from harness.models.factory import FactoryError, build_factory_model, load_factory
from harness.models.ghost_bn import GhostBatchNorm2d, accumulate_running_stats
from harness.models.ghost_convert import GhostBatchNorm1d, GhostBatchNorm3d, convert
from harness.results.provenance import source_version
from tests.conftest import REPO, SUITES, run_cli

# ---------------------------------------------------------------------------------------------
# harness.ghost_bn


def _with_stats(model: nn.Module) -> nn.Module:
    """Non-trivial weights and running statistics in every batch norm."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            with torch.no_grad():
                m.weight.copy_(1 + 0.3 * torch.randn(n, generator=g))
                m.bias.copy_(0.2 * torch.randn(n, generator=g))
            m.running_mean.copy_(torch.randn(n, generator=g))
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.num_batches_tracked.fill_(7)
    return model


def _net() -> nn.Module:
    return _with_stats(
        nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(4 * 5 * 5, 6),
            nn.BatchNorm1d(6),
        )
    )


def _per_slice(reference: nn.Module, x: Tensor, ghost: int) -> Tensor:
    """The reference model in train mode applied to each slice of `ghost` examples alone."""
    outs = []
    for start in range(0, x.shape[0], ghost):
        model = copy.deepcopy(reference).train()
        outs.append(model(x[start : start + ghost]))
    return torch.cat(outs)


@pytest.mark.parametrize("n", [12, 14])  # 14: a remainder slice of 2
def test_a_converted_model_normalizes_each_ghost_slice_alone(n: int) -> None:
    torch.manual_seed(0)
    reference = _net()
    model = copy.deepcopy(reference)
    same = harness.ghost_bn(model, 4)
    assert same is model
    layers = [m for m in model.modules() if isinstance(m, GhostBatchNorm2d)]
    assert [type(m) for m in layers] == [GhostBatchNorm2d, GhostBatchNorm1d]
    assert all(m.ghost_size == 4 for m in layers)
    # Buffers equal the originals at conversion; the weights are the same parameters' values.
    assert model.state_dict().keys() == reference.state_dict().keys()
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0)
    x = torch.randn(n, 3, 5, 5)
    # Eval mode is the original model's, exactly (before training moves the statistics).
    torch.testing.assert_close(model.eval()(x), reference.eval()(x), rtol=0, atol=0)
    torch.testing.assert_close(model.train()(x), _per_slice(reference, x, 4))


def test_batch_norm_3d_and_1d_on_sequences_convert_too() -> None:
    torch.manual_seed(0)
    reference = _with_stats(
        nn.Sequential(nn.Conv3d(2, 3, 1), nn.BatchNorm3d(3), nn.Flatten(2), nn.BatchNorm1d(3))
    )
    model = harness.ghost_bn(copy.deepcopy(reference), 3)
    assert [type(m) for m in model.modules() if isinstance(m, GhostBatchNorm2d)] == [
        GhostBatchNorm3d,
        GhostBatchNorm1d,
    ]
    x = torch.randn(9, 2, 2, 3, 4)
    torch.testing.assert_close(model.train()(x), _per_slice(reference, x, 3))


def test_converted_running_stats_update_once_per_step_like_the_builtin_models() -> None:
    reference = _net()
    model = harness.ghost_bn(copy.deepcopy(reference), 4)
    x = torch.randn(8, 3, 5, 5)
    with accumulate_running_stats(model):
        model.train()(x[:4])
        model(x[4:])
    bn = model[1]
    assert int(bn.num_batches_tracked) == 8  # 7 before, one step
    # The mean over the two slices' means, one EMA step of momentum 0.1.
    ref_bn = reference[1]
    acts = reference[0](x)
    slice_means = torch.stack([acts[:4].mean((0, 2, 3)), acts[4:].mean((0, 2, 3))]).mean(0)
    expected = 0.9 * ref_bn.running_mean + 0.1 * slice_means
    torch.testing.assert_close(bn.running_mean, expected, rtol=1e-5, atol=1e-6)


def test_a_model_without_batch_norm_trains_unchanged_and_others_are_named() -> None:
    model = nn.Sequential(
        nn.Linear(4, 4), nn.LayerNorm(4), nn.GroupNorm(2, 4), nn.LayerNorm(4), nn.SyncBatchNorm(4)
    )
    before = copy.deepcopy(model.state_dict())
    conversion = convert(model, 8)
    assert (conversion.converted, conversion.kept) == (0, 0)
    assert conversion.left_alone == ("GroupNorm x1", "LayerNorm x2", "SyncBatchNorm x1")
    note = conversion.note(8)
    assert "no batch norm" in note and "LayerNorm x2" in note and "\n" not in note
    assert [type(m) for m in model] == [
        nn.Linear,
        nn.LayerNorm,
        nn.GroupNorm,
        nn.LayerNorm,
        nn.SyncBatchNorm,
    ]
    for key, value in before.items():
        assert torch.equal(model.state_dict()[key], value)


def test_the_harness_own_ghost_batch_norms_are_kept_at_the_ghost_size() -> None:
    model = nn.Sequential(GhostBatchNorm2d(3, ghost_size=2), nn.BatchNorm2d(3))
    conversion = convert(model, 16)
    assert (conversion.converted, conversion.kept) == (1, 1)
    assert [m.ghost_size for m in model] == [16, 16]
    assert "1 batch norm(s) made ghost" in conversion.note(16)


@pytest.mark.parametrize("ghost", [0, -1, True, 2.5])
def test_ghost_size_must_be_a_positive_integer(ghost: object) -> None:
    with pytest.raises(ValueError, match="ghost_size"):
        convert(nn.Sequential(nn.BatchNorm2d(2)), ghost)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# factory strings, loading, cell ids


@pytest.mark.parametrize(
    "text", ["pkg.mod:build", "pkg.mod:Cls.make", "../x/net.py:build", "/abs/n.py:f", "my-net"]
)
def test_factory_forms_accepted(text: str) -> None:
    assert factory_problem(text) is None


@pytest.mark.parametrize("text", ["", " pkg:f", "pkg.mod:", "pkg..mod:f", "a b", "mod:1x", ".py:f"])
def test_factory_forms_refused_with_the_forms_that_work(text: str) -> None:
    why = factory_problem(text)
    assert why is not None and "pkg.module:function" in why


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


NET = """
    from torch import nn

    def build(num_classes, width=4):
        return nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes),
        )
"""


def _suite(folder: Path, model: str, name: str = "mine") -> Path:
    return _write(
        folder / f"{name}.yaml",
        f"""
        name: {name}
        dataset: {{name: synthetic, train_size: 64, test_size: 32}}
        models:
          {model}
        optimizers:
          sgd: {{kind: momentum, lr: 0.05, momentum: 0.9}}
        schedule: {{epochs: 2, milestones: [1], factor: 2, batch_size: 16}}
        schedules:
          decaying_lr: {{realization: lr}}
        training: {{ghost_batch_size: 8}}
        experiments:
          - {{name: e, optimizers: [sgd], schedules: [decaying_lr], seeds: [0]}}
        """,
    )


def test_a_factory_and_its_kwargs_are_in_the_cell_id(tmp_path: Path) -> None:
    _write(tmp_path / "net.py", NET)
    one = load_suite(_suite(tmp_path, 'net: {factory: "net.py:build", kwargs: {width: 4}}'))
    two = load_suite(_suite(tmp_path, 'net: {factory: "net.py:build", kwargs: {width: 5}}'))
    three = load_suite(_suite(tmp_path, 'net: {factory: "other.py:build", kwargs: {width: 4}}'))
    cell = one.cells[0]
    assert isinstance(cell.model, FactorySpec)
    assert cell.resolved_config()["model"] == {"factory": "net.py:build", "kwargs": {"width": 4}}
    assert cell.folder == str(tmp_path)
    assert len({one.cells[0].cell_id, two.cells[0].cell_id, three.cells[0].cell_id}) == 3
    # A registered model's resolved config has no new field (every other cell id as before).
    smoke = load_suite(SUITES / "smoke.yaml").cells[0]
    assert smoke.resolved_config()["model"] == {"name": "small_cnn", "width": 16}


@pytest.mark.parametrize(
    ("model", "field", "says"),
    [
        ('net: {factory: "net:"}', "models.net.factory", "pkg.module:function"),
        ('net: {factory: "net.py:build", kwargs: {num_classes: 3}}', "kwargs.num_classes", "drop"),
        ('net: {factory: "net.py:build", width: 3}', "models.net.width", "allowed keys"),
        ("net: {name: nope}", "models.net", "factory"),
    ],
)
def test_a_bad_model_entry_is_one_line_naming_the_field(
    tmp_path: Path, model: str, field: str, says: str
) -> None:
    with pytest.raises(UserError) as err:
        load_suite(_suite(tmp_path, model))
    message = str(err.value)
    assert field in message and says in message and "\n" not in message


def test_plan_never_imports_the_factory(tmp_path: Path) -> None:
    marker = tmp_path / "imported"
    _write(tmp_path / "net.py", f"open({str(marker)!r}, 'w').close()\n" + textwrap.dedent(NET))
    suite = _suite(tmp_path, 'net: {factory: "net.py:build"}')
    done = run_cli("plan", str(suite), "--json")
    assert done.returncode == 0, done.stderr
    assert not marker.exists()
    probe = (
        "import sys; from harness.config.suite import load_suite; "
        f"load_suite({str(suite)!r}); assert 'torch' not in sys.modules, 'torch'"
    )
    subprocess.run([sys.executable, "-c", probe], check=True, cwd=REPO)


def test_a_file_factory_builds_with_num_classes_and_kwargs(tmp_path: Path) -> None:
    _write(tmp_path / "net.py", NET)
    ref = FactoryRef.of("net.py:build", {"width": 6}, str(tmp_path))
    model, conversion = build_factory_model(ref, num_classes=3, ghost_size=8)
    assert conversion.converted == 1
    assert model(torch.randn(2, 3, 4, 4)).shape == (2, 3)
    assert model[1].num_features == 6 and isinstance(model[1], GhostBatchNorm2d)
    _, source = load_factory(ref)
    assert source == str((tmp_path / "net.py").resolve())


def test_an_installed_entry_point_names_a_model(tmp_path: Path, monkeypatch) -> None:
    _write(tmp_path / "usernets" / "__init__.py", NET)
    info = tmp_path / "usernets-0.1.dist-info"
    _write(info / "METADATA", "Metadata-Version: 2.1\nName: usernets\nVersion: 0.1\n")
    _write(info / "entry_points.txt", "[harness.models]\ntiny = usernets:build\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    model, _ = build_factory_model(FactoryRef.of("tiny", {}), num_classes=5, ghost_size=4)
    assert model[-1].out_features == 5
    with pytest.raises(FactoryError, match="tiny"):  # the known ones are listed
        load_factory(FactoryRef.of("missing", {}))


@pytest.mark.parametrize(
    ("body", "target", "says"),
    [
        (NET, "nowhere.py:build", "no file"),
        (NET, "net.py:nothing", "no attribute 'nothing'"),
        (NET, "no_such_module_27:build", "cannot import 'no_such_module_27'"),
        ("raise RuntimeError('boom at import')\n", "net.py:build", "boom at import"),
        ("def build(num_classes):\n    raise ValueError('bad width')\n", "net.py:build", "bad"),
        ("def build(num_classes):\n    return 42\n", "net.py:build", "not a torch.nn.Module"),
        ("build = 3\n", "net.py:build", "not a callable"),
    ],
)
def test_a_factory_that_fails_is_one_line(tmp_path: Path, body: str, target: str, says: str):
    _write(tmp_path / "net.py", body)
    with pytest.raises(FactoryError) as err:
        build_factory_model(FactoryRef.of(target, {}, str(tmp_path)), num_classes=2, ghost_size=2)
    assert says in str(err.value) and "\n" not in str(err.value)


def test_provenance_names_the_file_and_its_commit(tmp_path: Path) -> None:
    net = _write(tmp_path / "repo" / "net.py", NET)
    assert source_version(str(net)) == {
        "model_source": str(net),
        "model_commit": None,
        "model_dirty": None,
    }
    git = ["git", "-C", str(net.parent), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "net.py"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "net"], check=True)
    commit = subprocess.run(
        [*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()
    assert source_version(str(net)) == {
        "model_source": str(net),
        "model_commit": commit,
        "model_dirty": False,
    }
    net.write_text(NET + "\n# edited\n")
    assert source_version(str(net))["model_dirty"] is True


# ---------------------------------------------------------------------------------------------
# Through the real CLI: bad factories stop the run before training; the example suite end to end


@pytest.mark.parametrize(
    ("body", "target", "says"),
    [
        (NET, "no_such_module_27:build", "cannot import 'no_such_module_27'"),
        ("def build(num_classes):\n    raise ValueError('bad width')\n", "net.py:build", "bad"),
        ("def build(num_classes):\n    return [1, 2]\n", "net.py:build", "not a torch.nn.Module"),
    ],
)
def test_harness_run_refuses_a_bad_factory_before_training(
    tmp_path: Path, body: str, target: str, says: str
) -> None:
    _write(tmp_path / "net.py", body)
    suite = _suite(tmp_path, f'net: {{factory: "{target}"}}')
    results = tmp_path / "results"
    done = run_cli("run", str(suite), "--results", str(results), "--device", "cpu")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert f"{suite}:" in lines[0] and "models.net.factory" in lines[0] and says in lines[0]
    assert not (results / "runs").exists()  # nothing trained, nothing written


def test_a_cluster_submission_refuses_a_bad_factory_before_queueing(tmp_path: Path) -> None:
    """--executor: the factory is imported and built before any task is queued."""
    pytest.importorskip("submitit", reason="--executor needs submitit (the slurm extra)")
    _write(tmp_path / "net.py", "def build(num_classes):\n    return [1, 2]\n")
    suite = _suite(tmp_path, 'net: {factory: "net.py:build"}')
    results = tmp_path / "results"
    done = run_cli("run", str(suite), "--results", str(results), "--executor", "local")
    assert done.returncode == 2, done.stderr
    assert "models.net.factory" in done.stderr and "not a torch.nn.Module" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (results / "slurm").exists()  # nothing queued


def test_a_factory_model_that_fails_in_training_is_its_cells_failed_row(tmp_path: Path) -> None:
    _write(
        tmp_path / "net.py",
        """
        from torch import nn

        class Broken(nn.Module):
            def __init__(self, num_classes):
                super().__init__()
                self.bn = nn.BatchNorm2d(3)

            def forward(self, x):
                raise RuntimeError("forward is broken")

        def build(num_classes):
            return Broken(num_classes)
        """,
    )
    suite = _suite(tmp_path, 'net: {factory: "net.py:build"}')
    results = tmp_path / "results"
    done = run_cli("run", str(suite), "--results", str(results), "--device", "cpu")
    assert done.returncode == 1, done.stderr
    import pandas as pd

    runs = pd.read_parquet(results / "runs")
    assert list(runs["status"]) == ["failed"]
    assert "forward is broken" in runs["error"].iloc[0]


EXAMPLE = SUITES / "examples" / "custom.yaml"
TINY = (
    "--set", "dataset.train_size=256", "--set", "dataset.test_size=100",
    "--set", "schedule.epochs=2", "--set", "schedule.milestones=[1]",
    "--set", "schedule.batch_size=32", "--set", "training.ghost_batch_size=16",
    "--set", "execution.max_micro_batch=64", "--set", "models.tiny_resnet.kwargs.width=4",
)  # fmt: skip


def test_the_example_suite_plans_runs_and_reports_the_users_model(tmp_path: Path, cifar_root):
    """suites/examples/custom.yaml: the paper's three schedules on examples/custom_model/net.py,
    planned, trained on real CIFAR-10 (256 images, 2 epochs) and reported through the CLI."""
    import pandas as pd

    plan = run_cli("plan", str(EXAMPLE), "--json", *TINY)
    assert plan.returncode == 0, plan.stderr
    cells = {c["cell_id"] for c in json.loads(plan.stdout)["cells"]}
    assert len(cells) == 3
    results = tmp_path / "results"
    run = run_cli(
        "run", str(EXAMPLE), "--results", str(results), "--device", "cpu",
        "--data", str(cifar_root), *TINY,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "model tiny_resnet: ../../examples/custom_model/net.py:build: 9 batch norm(s)" in (
        run.stderr
    )
    runs = pd.read_parquet(results / "runs")
    assert set(runs["cell_id"]) == cells and set(runs["status"]) == {"ok"}
    assert set(runs["schedule"]) == {"decaying_lr", "hybrid", "increasing_batch"}
    net = (REPO / "examples" / "custom_model" / "net.py").resolve()
    assert set(runs["model_source"]) == {str(net)}
    assert runs["model_commit"].notna().all()  # the repository is a git checkout
    config = json.loads(runs["config"].iloc[0])["model"]
    assert config == {
        "factory": "../../examples/custom_model/net.py:build",
        "kwargs": {"blocks": 1, "width": 4},
    }
    # The increasing-batch cell takes fewer updates than decaying lr, as planned.
    updates = dict(zip(runs["schedule"], runs["updates"], strict=True))
    assert updates["increasing_batch"] < updates["decaying_lr"]
    report = run_cli("report", str(results))
    assert report.returncode == 0, report.stderr
    for schedule in ("decaying_lr", "hybrid", "increasing_batch"):
        assert schedule in report.stdout
    assert "tiny_resnet" in report.stdout


def test_an_image_folder_suite_with_a_users_model_asks_for_the_image_size(tmp_path: Path):
    _write(tmp_path / "net.py", NET)
    suite = _suite(tmp_path, 'net: {factory: "net.py:build"}')
    suite.write_text(
        suite.read_text().replace(
            "{name: synthetic, train_size: 64, test_size: 32}",
            "{name: imagenet, train_size: 64, test_size: 32}",
        )
    )
    done = run_cli("run", str(suite), "--results", str(tmp_path / "r"), "--device", "cpu")
    assert done.returncode == 2, done.stderr
    assert "dataset.image_size" in done.stderr and "states no input size" in done.stderr
