"""Learning-rate schedules: a multiplier of the peak rate as a function of the optimizer step.

Each spans the job's own step count (`total_steps`, set by the trainer from max_steps), so a sweep
never cuts a schedule short: Hoffmann et al. (2022) showed that a cosine cycle longer than the run
biases the fitted law.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scalinglab.errors import ConfigError


@dataclass
class Schedule:
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1  # final rate / peak rate, for the decaying schedules

    def __post_init__(self) -> None:
        if self.warmup_steps < 0:
            raise ConfigError(f"scheduler.warmup_steps must be >= 0, got {self.warmup_steps}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"scheduler.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")

    def __call__(self, step: int, total_steps: int) -> float:
        warmup = min(self.warmup_steps, max(total_steps - 1, 0))
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(total_steps - warmup, 1)
        return self.decay(min(progress, 1.0))

    def decay(self, progress: float) -> float:
        """Multiplier after warm-up, for progress in [0, 1]."""
        raise NotImplementedError


class Constant(Schedule):
    def decay(self, progress: float) -> float:
        return 1.0


class Cosine(Schedule):
    def decay(self, progress: float) -> float:
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (
            1 + math.cos(math.pi * progress)
        )


class Linear(Schedule):
    def decay(self, progress: float) -> float:
        return 1.0 - (1 - self.min_lr_ratio) * progress


@dataclass
class WSD(Schedule):
    """Warm-up, stable, decay (Hu et al. 2024): flat at the peak, then a short decay at the end.

    The flat phase is what makes decay branches possible: a checkpoint taken during it can be decayed
    to any shorter token count without retraining from scratch.
    """

    decay_fraction: float = 0.2
    min_lr_ratio: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.decay_fraction <= 1.0:
            raise ConfigError(
                f"scheduler.decay_fraction must be in (0, 1], got {self.decay_fraction}"
            )

    def stable_until(self, total_steps: int) -> int:
        """Steps after which this schedule, over `total_steps`, leaves its flat phase.

        A run of any longer WSD schedule (same warm-up) matches this one up to here, so its
        checkpoint at this step can branch off into this schedule's decay.
        """
        warmup = min(self.warmup_steps, max(total_steps - 1, 0))
        return warmup + math.floor((1.0 - self.decay_fraction) * (total_steps - warmup))

    def decay(self, progress: float) -> float:
        start = 1.0 - self.decay_fraction
        if progress <= start:
            return 1.0
        return 1.0 - (1 - self.min_lr_ratio) * (progress - start) / self.decay_fraction
