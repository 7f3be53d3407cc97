"""How a cell runs, not what it computes: the one definition of the execution settings.

A suite's `execution:` validates into `Execution` (the config layer), the command line's
overrides replace fields of it (`harness.app.jobs.execution`) and the training layer reads it
as it is; a test or a script builds one with keywords. None of it is in the cell id: no
setting here may change a number. A new setting is one field here (see docs/ARCHITECTURE.md,
"How to add a knob").
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar, Literal, get_args

from harness.core.rules import MAX_BATCH_SIZE, ScheduleError

MAX_LOADER_WORKERS = 256
IMAGE_CHECKS = ("header", "decode")
# torch.compile's modes the harness runs: "default" (inductor's kernels) and "reduce-overhead"
# (the same kernels, replayed as CUDA graphs on a GPU: a launch-bound step's host cost gone).
CompileMode = Literal["default", "reduce-overhead"]
COMPILE_MODES: tuple[CompileMode, ...] = get_args(CompileMode)
# Pillow's own MAX_IMAGE_PIXELS, where it only warns (it refuses twice as many): about 0.27 GB
# of RGB pixels decoded per image. ImageNet's largest images hold under a third of it.
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485


class ExecutionError(ScheduleError):
    """An execution setting is out of range; `field` names it (a suite reports it there)."""


@dataclass(frozen=True)
class Execution:
    """The execution settings; every field checked on construction, wherever it comes from."""

    # pydantic reads this when a suite validates into the dataclass: unknown keys are refused.
    __pydantic_config__: ClassVar[dict[str, object]] = {"extra": "forbid"}

    # Images per forward/backward; None: the whole batch. From a suite or the command line it
    # must be a multiple of every ghost batch size (`micro_batch_problem`); one built in Python
    # is a cap that a step rounds down to whole ghost slices (harness.train.step).
    max_micro_batch: int | None = None
    channels_last: bool = False
    compile: bool = False
    # With compile: torch.compile's mode. "reduce-overhead" captures each fixed shape's forward
    # and backward as CUDA graphs (one graph per phase, recorded in the warm-up) and replays
    # them: a step of ~360 small kernels launched by one call. Same kernels as "default", so no
    # number changes beyond float order; on the CPU there are no graphs and it is "default".
    # The optimizer's update stays outside the graph (a fused kernel or two on CUDA).
    compile_mode: CompileMode = "default"
    eval_batch_size: int = 1000
    # The whole training set's loss in eval mode, unaugmented, at each evaluation: the
    # training loss the paper plots. A measurement, not the recipe: it changes no number.
    eval_train_loss: bool = False
    # Its images: the first K of the training set (the same at every evaluation); None: all
    # of them. 10000 costs what the CIFAR-10 test set does; the curves say how many were used.
    train_loss_images: int | None = 10_000
    # Image folders: DataLoader processes decoding images (0: in the training process);
    # None: min(8, CPUs). Per process of a data-parallel job.
    loader_workers: int | None = None
    # The gradient noise scale B_simple per epoch, from the micro-batch and step gradients
    # (harness.train.noise); a step that would run whole runs as two micro-batches instead,
    # which changes only the order of float summation.
    noise_scale: bool = False
    # CUDA: cuDNN times its convolution algorithms at each new input shape and keeps the
    # fastest (a pause at each batch-size change, and workspace memory); False: it picks them
    # by heuristics. Like channels_last, it chooses kernels, not the recipe's numbers.
    cudnn_benchmark: bool = True
    # Image folders: how the scan before training decides which files are readable (and so
    # N): "header" parses each file's header (fast), "decode" decodes every image (slow, but
    # also leaves out a file whose data is cut short). For a given N the images are the
    # same either way: a file "decode" leaves out makes N smaller, which is another cell id.
    image_check: Literal["header", "decode"] = "header"
    # Image folders: an image of more pixels (width x height) is skipped when the folder is
    # scanned and counted like an unreadable one (harness.data.imagefolder), and refused if
    # met when decoding, so one huge file cannot take gigabytes of memory per loader worker.
    # Which images make N is the data, not the recipe: N is checked against dataset.train_size.
    # Pillow itself still refuses an image of over twice its own limit (178,956,970 pixels).
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS

    @property
    def graphs(self) -> bool:
        """Whether the step is captured ("reduce-overhead"): on a GPU, CUDA graph trees."""
        return self.compile and self.compile_mode == "reduce-overhead"

    def __post_init__(self) -> None:
        for name in ("max_micro_batch", "eval_batch_size", "train_loss_images"):
            value = getattr(self, name)
            if value is not None and not _is_int_in(value, 1, MAX_BATCH_SIZE):
                raise ExecutionError(
                    name, f"{value!r} must be a whole number in 1..{MAX_BATCH_SIZE}"
                )
        if self.image_check not in IMAGE_CHECKS:
            raise ExecutionError(
                "image_check", f"{self.image_check!r} must be one of {', '.join(IMAGE_CHECKS)}"
            )
        if not _is_int_in(self.max_image_pixels, 1, 2**40):
            raise ExecutionError(
                "max_image_pixels", f"{self.max_image_pixels!r} must be a whole number >= 1"
            )
        if self.compile_mode not in COMPILE_MODES:
            raise ExecutionError(
                "compile_mode", f"{self.compile_mode!r} must be one of {', '.join(COMPILE_MODES)}"
            )
        if self.compile_mode != "default" and not self.compile:
            raise ExecutionError(
                "compile_mode", f"{self.compile_mode!r} needs compile: true; set both or neither"
            )
        workers = self.loader_workers
        if workers is not None and not _is_int_in(workers, 0, MAX_LOADER_WORKERS):
            raise ExecutionError(
                "loader_workers", f"{workers!r} must be a whole number in 0..{MAX_LOADER_WORKERS}"
            )


def _is_int_in(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def micro_batch_problem(value: int, ghosts: Iterable[int]) -> str | None:
    """Why `value` cannot be max_micro_batch for cells of these ghost batch sizes, or None.

    The one rule, whether the value comes from a suite or from --max-micro-batch: a micro-batch
    is whole ghost slices, so that splitting a step changes no number.
    """
    sizes = sorted(set(ghosts))
    if value > 0 and not any(value % g for g in sizes):
        return None
    return f"must be a positive multiple of the ghost batch size ({', '.join(map(str, sizes))})"
