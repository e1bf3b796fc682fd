"""The loop's settings: one typed home per knob. Plain dataclasses (no torch), so the CLI can register
them as Hydra's schema for `trainer.*` and users get an error that names the key."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

PRECISIONS = ("32", "bf16-mixed", "16-mixed")


@dataclass
class EarlyStopping:
    patience: Optional[int] = None  # epochs without improvement before stopping; null: never stop early
    monitor: Optional[str] = None  # a metrics.csv column, e.g. val/loss; null: the task's (val/acc, val/loss...)
    mode: Optional[str] = None  # min or max; null: the task's direction for its own monitor, else min
    min_delta: float = 0.0  # an improvement smaller than this does not count


@dataclass
class TrainerSettings:
    max_epochs: int = 10
    device: str = "auto"  # auto, cpu, cuda, cuda:N, mps
    devices: int = 1  # > 1: data-parallel over this many processes on this machine (torch elastic launch)
    max_restarts: int = 2  # devices > 1: times all processes restart (and resume) after one of them fails
    launcher: str = "local"  # devices > 1: local (torch elastic on this machine) or ray (Ray Train, RAY_ADDRESS)
    cluster: str = "auto"  # the cluster environment (trainkit.clusters): auto (detected), single, torchrun, slurm
    precision: str = "32"  # 32, bf16-mixed, 16-mixed
    grad_clip: Optional[float] = None  # max global L2 norm of each optimizer's gradients; null: no clipping
    log_every_n_steps: int = 50  # steps between host syncs for the progress display and TensorBoard
    deterministic: bool = False  # torch.use_deterministic_algorithms: bitwise-repeatable runs, slower kernels
    progress: str = "auto"  # auto (rich bar on a terminal, plain lines otherwise), rich, plain, none
    plain_every_s: float = 10.0  # without a terminal: at most one progress line per this many seconds
    tensorboard: bool = True
    # Smoke and debug runs: a number >= 1 is a count of batches, below 1 a fraction of the split.
    limit_train_batches: Optional[float] = None  # per epoch
    limit_eval_batches: Optional[float] = None  # per validation or test pass
    overfit_batches: Optional[int] = None  # train (and validate) on the same first N batches, unshuffled
    enable_checkpointing: bool = True  # false: write no checkpoint (debug runs); the test uses the last weights
    eval_batch_size: Optional[int] = None  # default: 4 × data.batch_size (no gradients to hold)
    num_threads: Optional[int] = None  # torch intra-op threads on the CPU; null: torch's default
    checkpoint_every_n_steps: Optional[int] = None  # also save mid-epoch every this many steps
    keep_last_k: int = 2  # step/epoch checkpoints kept besides last.ckpt and best.ckpt
    on_nan: str = "stop"  # a NaN/inf loss: stop (the run fails, naming the step) or skip (drop that update)
    accumulate_grad_batches: int = 1  # sum the gradients of this many batches before each update
    ema_decay: Optional[float] = None  # keep an EMA of the weights (e.g. 0.999) for validation and checkpoints
    early_stopping: EarlyStopping = field(default_factory=EarlyStopping)
    # Speed switches (benchmarks/README.md measures each): none changes what is computed beyond float rounding.
    compile: bool = False  # torch.compile each module's forward (and its children's); the first steps compile
    channels_last: bool = False  # NHWC memory format for image batches and conv weights (faster convs on GPUs)
    matmul_precision: Optional[str] = None  # float32 matmuls: highest, high (TF32), medium (bf16); null: torch's

    def __post_init__(self) -> None:
        if isinstance(self.early_stopping, dict):
            self.early_stopping = EarlyStopping(**self.early_stopping)
        if self.early_stopping.mode not in (None, "min", "max"):
            raise ValueError(f"trainer.early_stopping.mode={self.early_stopping.mode!r} is not one of min, max.")
        if self.accumulate_grad_batches < 1:
            raise ValueError(f"trainer.accumulate_grad_batches={self.accumulate_grad_batches} must be at least 1.")
        self.precision = str(self.precision)
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"trainer.precision={self.precision!r} is not one of {', '.join(PRECISIONS)}: "
                f"use 32 for full precision, bf16-mixed or 16-mixed for automatic mixed precision."
            )
        if self.max_epochs < 1:
            raise ValueError(f"trainer.max_epochs={self.max_epochs} must be at least 1.")
        if self.log_every_n_steps < 1:
            raise ValueError(f"trainer.log_every_n_steps={self.log_every_n_steps} must be at least 1.")
        if self.on_nan not in ("stop", "skip"):
            raise ValueError(f"trainer.on_nan={self.on_nan!r} is not one of stop, skip.")
        if self.keep_last_k < 1:
            raise ValueError(f"trainer.keep_last_k={self.keep_last_k} must be at least 1.")
        if self.matmul_precision not in (None, "highest", "high", "medium"):
            raise ValueError(f"trainer.matmul_precision={self.matmul_precision!r} is not one of highest, high, medium "
                             f"(or null for torch's default).")
        if self.progress not in ("auto", "rich", "plain", "none"):
            raise ValueError(f"trainer.progress={self.progress!r} is not one of auto, rich, plain, none.")
        if self.grad_clip is not None and not (math.isfinite(self.grad_clip) and self.grad_clip > 0):
            raise ValueError(f"trainer.grad_clip={self.grad_clip} must be a positive norm (e.g. 1.0): 0 would freeze "
                             f"training and a negative one reverse the gradients. trainer.grad_clip=null: no clipping.")
        for key in ("limit_train_batches", "limit_eval_batches"):
            value = getattr(self, key)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"trainer.{key}={value} must be above 0: a count of batches (1 or more) or a "
                                 f"fraction of them (below 1); trainer.{key}=null for all.")
            if value is not None and value > 1 and not float(value).is_integer():
                raise ValueError(f"trainer.{key}={value}: above 1 it is a count of batches, a whole number.")
        for key in ("devices", "overfit_batches", "eval_batch_size", "num_threads", "checkpoint_every_n_steps"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ValueError(f"trainer.{key}={value} must be at least 1 (or null where that means off).")
        if self.launcher not in ("local", "ray"):
            raise ValueError(f"trainer.launcher={self.launcher!r} is not one of local, ray.")
        if self.max_restarts < 0:
            raise ValueError(f"trainer.max_restarts={self.max_restarts} must be 0 or more.")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ValueError(f"trainer.ema_decay={self.ema_decay} must be between 0 and 1 (e.g. 0.999), or null.")
        if not (math.isfinite(self.plain_every_s) and self.plain_every_s >= 0):
            raise ValueError(f"trainer.plain_every_s={self.plain_every_s} must be 0 or more seconds.")
        es = self.early_stopping
        if es.patience is not None and es.patience < 1:
            raise ValueError(f"trainer.early_stopping.patience={es.patience} must be at least 1 epoch, or null.")
        if not (math.isfinite(es.min_delta) and es.min_delta >= 0):
            raise ValueError(f"trainer.early_stopping.min_delta={es.min_delta} must be 0 or more.")
