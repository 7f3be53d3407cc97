"""The enumerated kinds of a recipe, each listed once: every layer that names one imports it.

The config layer validates a suite against these types, the training layer dispatches on them
and the model registry is checked against `MODEL_NAMES` (tests/test_models.py): a new kind is
added here first, and the type checker then points at every place that must handle it. Kept
in the torch-free core so that `harness plan` can validate a suite without importing torch.
"""

from __future__ import annotations

from typing import Literal, get_args

# adamw: Adam with decoupled weight decay (Loshchilov & Hutter), not in the paper; docs/paper.md
OptimizerKind = Literal["sgd", "momentum", "nesterov", "adam", "adamw"]
OPTIMIZER_KINDS: tuple[OptimizerKind, ...] = get_args(OptimizerKind)
MOMENTUM_KINDS: tuple[OptimizerKind, ...] = ("momentum", "nesterov")  # a schedule may set m

# Where `harness run --track NAME` streams each cell's curves as it trains (harness.app.trackers;
# its registry has one entry per name, tests/test_tracking.py checks)
TrackerName = Literal["tensorboard", "wandb", "mlflow"]
TRACKERS: tuple[TrackerName, ...] = get_args(TrackerName)

# bf16: autocast; fp64: model and inputs in float64 (the exactness fingerprint)
Precision = Literal["fp32", "bf16", "fp64"]
PRECISIONS: tuple[Precision, ...] = get_args(Precision)

# The batch-norm running statistics evaluation uses (harness.models.ghost_bn): "ema", the
# once-per-step moving average; "precise", recomputed from fixed training images before each
# evaluation.
BnStats = Literal["ema", "precise"]

# The registered models (harness.models.registry.MODELS builds them; the config layer has one
# parameter spec per name).
ModelName = Literal["small_cnn", "wrn", "inception_resnet_v2", "resnet50", "gpt"]
MODEL_NAMES: tuple[ModelName, ...] = get_args(ModelName)
