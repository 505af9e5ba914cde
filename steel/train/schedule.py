"""Learning-rate schedule: linear warmup, then cosine (or linear, or constant) decay.

The learning rate is a pure function of the optimizer step, so a resumed run continues the
schedule exactly where it stopped (no second warmup) and the schedule's state is its settings.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class LRSchedule:
    max_lr: float
    warmup_steps: int
    max_steps: int
    decay: str = "cosine"
    min_lr_ratio: float = 0.0

    def __call__(self, step: int) -> float:
        """Return the learning rate of optimizer step `step` (0-based)."""
        min_lr = self.max_lr * self.min_lr_ratio
        if step < self.warmup_steps:
            # Step 0 already trains, so warmup runs from max_lr / warmup_steps up to max_lr.
            return self.max_lr * (step + 1) / self.warmup_steps
        if self.decay == "constant":
            return self.max_lr

        decay_steps = max(1, self.max_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / decay_steps)
        if self.decay == "linear":
            return min_lr + (self.max_lr - min_lr) * (1.0 - progress)
        return min_lr + (self.max_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def state_dict(self) -> dict:
        return asdict(self)


def set_learning_rate(optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
