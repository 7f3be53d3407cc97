"""`harness convert`, `harness bench`, `harness data`: the commands that need no suite.

Only the options live here; `app.convert`, `app.bench` and `data.registry` do the work.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from harness.cli.options import DataOption
from harness.core.datasets import DatasetKind


def convert(
    recipe: Annotated[
        Path | None, typer.Argument(help="A recipe YAML file (keys as the options, e.g. lr: 0.1).")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs of the recipe.")] = None,
    train_size: Annotated[int | None, typer.Option(help="Training examples per epoch (N).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="The recipe's batch size B.")] = None,
    lr: Annotated[
        float | None, typer.Option(help="Initial lr per optimizer step (mean loss).")
    ] = None,
    momentum: Annotated[float | None, typer.Option(help="Momentum m (0 for plain SGD).")] = None,
    milestones: Annotated[
        str | None, typer.Option(help="Step schedule: epochs of the drops, e.g. 60,120,160.")
    ] = None,
    factor: Annotated[float | None, typer.Option(help="Step schedule: drop per milestone.")] = None,
    cosine: Annotated[
        bool | None, typer.Option("--cosine/--step", help="Cosine instead of step shape.")
    ] = None,
    warmup_epochs: Annotated[int | None, typer.Option(help="Linear warm-up epochs.")] = None,
    b_max: Annotated[int | None, typer.Option(help="Largest batch size allowed.")] = None,
    new_lr: Annotated[
        float | None, typer.Option(help="Raise the initial lr; B0 follows B ∝ lr.")
    ] = None,
    new_momentum: Annotated[
        float | None, typer.Option(help="Raise the momentum; B0 follows B ∝ 1/(1-m).")
    ] = None,
    batch_drops: Annotated[
        int | None, typer.Option(help="Hybrid: drops made by the batch (default 1).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Also write a suite YAML for `harness plan` / `run`.")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="With --out: the suite's model (small_cnn, wrn = WRN-16-4, "
            "inception_resnet_v2, resnet50), or your own: pkg.module:build or "
            "file.py:build (relative to the suite written)."
        ),
    ] = None,
) -> None:
    """An lr recipe as decaying-lr, hybrid and increasing-batch schedules, side by side."""
    from harness.app.convert import convert_command

    flags = {
        "epochs": epochs,
        "train_size": train_size,
        "batch_size": batch_size,
        "lr": lr,
        "momentum": momentum,
        "milestones": milestones,
        "factor": factor,
        "shape": None if cosine is None else ("cosine" if cosine else "step"),
        "warmup_epochs": warmup_epochs,
        "b_max": b_max,
        "new_lr": new_lr,
        "new_momentum": new_momentum,
        "batch_drops": batch_drops,
        "model": model,
    }
    convert_command(recipe, flags, out)


def bench(
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:N, mps.")] = None,
    model: Annotated[
        str,
        typer.Option(help="wrn16_4, small_cnn, or your own: pkg.module:build or file.py:build."),
    ] = "wrn16_4",
    batch_sizes: Annotated[
        str,
        typer.Option(
            help="Images per optimizer step, comma-separated (default: the paper's CIFAR-10 "
            "batches, B0 = 128 and x5, x25, and the 5120 cap)."
        ),
    ] = "128,640,3200,5120",
    precision: Annotated[str, typer.Option(help="fp32 or bf16 (autocast).")] = "fp32",
    compile_model: Annotated[
        bool, typer.Option("--compile/--no-compile", help="torch.compile both models.")
    ] = False,
    modes: Annotated[
        str | None,
        typer.Option(
            help="The harness step's variants, each beside the plain loop: eager, compile, "
            "captured (compile mode reduce-overhead: CUDA graphs on a GPU). Default eager."
        ),
    ] = None,
    steps: Annotated[int, typer.Option(help="Timed steps per repeat.")] = 10,
    repeats: Annotated[
        int,
        typer.Option(
            help="Timed rounds, each one repeat of every implementation in turn; the median "
            "and the min-max are reported, of images/s and of each ratio."
        ),
    ] = 3,
    out: Annotated[
        Path | None, typer.Option(help="Folder for the Parquet rows (default: runs/bench).")
    ] = None,
    data: Annotated[
        str,
        typer.Option(
            help="synthetic (no download), or cifar10 or cifar100 (real images): a dataset "
            "held on the device that needs no file of yours."
        ),
    ] = "cifar10",
    data_root: DataOption = None,
    max_micro_batch: Annotated[
        int | None, typer.Option(help="Largest micro-batch of the harness step.")
    ] = None,
    ghost: Annotated[
        int | None,
        typer.Option(
            help="Ghost batch size (default: 128, or for a batch size it does not divide the "
            "largest divisor of both: 32 at B = 32, 16 at B = 48)."
        ),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="DataLoader workers of the reference (default: auto).")
    ] = None,
) -> None:
    """Images/s of the harness's training step beside a plain PyTorch loop (DataLoader,
    nn.BatchNorm2d, torch.optim.SGD) at each batch size; prints a table, writes Parquet."""
    from harness.app.bench import parse_batch_sizes, parse_modes, run_bench

    run_bench(
        device=device,
        model=model,
        batch_sizes=parse_batch_sizes(batch_sizes),
        precision=precision,
        compile_model=compile_model,
        steps=steps,
        repeats=repeats,
        out=out,
        data=data,
        data_root=data_root,
        max_micro_batch=max_micro_batch,
        ghost=ghost,
        workers=workers,
        modes=None if modes is None else parse_modes(modes),
    )


def data_command(kind: DatasetKind) -> Callable[[Path], None]:
    """`harness data NAME DEST` for a dataset kind that downloads (`DatasetKind.download`)."""

    def fetch(dest: Path = typer.Argument(..., help=f"Folder to put {kind.download} in.")) -> None:
        from harness.data.registry import download

        folder = download(kind.name, dest)
        print(f"{kind.title} is in {folder}; pass --data {dest} or set HARNESS_DATA={dest}")

    fetch.__doc__ = f"Download the official {kind.title}, check its checksum and unpack it."
    return fetch
