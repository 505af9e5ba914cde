"""Run a tiny Qwen2 training on toy tokens in this process (or under torchrun); used by the tests.

    python toy_train.py TOKENS.npy key=value ... [--dump-grads OUT.safetensors] [--step-delay S]

With --dump-grads it first runs the first step's forward and backward and writes the full
gradients (rank 0), so tests can compare gradients across world sizes. It then clears them and
trains from the start. --step-delay sleeps after each step, so a test can kill the run midway.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_toys import build_trainer  # noqa: E402

from steel.train.config import load_config  # noqa: E402
from steel.train.distributed import destroy_distributed, init_distributed  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("tokens")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--dump-grads", default=None)
    parser.add_argument("--step-delay", type=float, default=0.0)
    args = parser.parse_args()

    config = load_config(None, args.overrides)
    env = init_distributed("cpu")
    try:
        trainer = build_trainer(config, env, np.load(args.tokens))
        if args.dump_grads:
            dump_first_gradients(trainer, env, args.dump_grads)
            trainer.optimizer.zero_grad(set_to_none=True)
            trainer.batches.load_state_dict({"position": 0})
        if args.step_delay:
            trainer.batches = SlowSource(trainer.batches, args.step_delay)
        trainer.fit()
    finally:
        destroy_distributed()
    return 0


class SlowSource:
    def __init__(self, inner, delay):
        self.inner, self.delay = inner, delay

    def __iter__(self):
        import time

        for item in self.inner:
            time.sleep(self.delay)
            yield item

    def load_state_dict(self, state):
        self.inner.load_state_dict(state)


def dump_first_gradients(trainer, env, path: str) -> None:
    from safetensors.torch import save_file

    local_batch, _ = next(iter(trainer.batches))
    loss, _, _ = trainer.accumulate_gradients(local_batch)
    grads = {}
    for name, param in trainer.model.named_parameters():
        grad = param.grad
        if hasattr(grad, "full_tensor"):
            grad = grad.full_tensor()
        grads[name] = grad.detach().clone().contiguous()
    if env.is_main:
        import torch

        grads["__loss__"] = torch.tensor([loss], dtype=torch.float64)
        save_file(grads, path)


if __name__ == "__main__":
    raise SystemExit(main())
