"""Process-group set-up and FSDP2 sharding.

The same command runs on one process or under `torchrun`: `init_distributed` reads the variables
torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), joins the process group
with NCCL on GPUs or gloo on CPUs, and `shard_model` applies `torch.distributed.fsdp.fully_shard`
to every decoder layer and then to the root module whenever the world size is above 1.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistributedEnv:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto") -> DistributedEnv:
    """Join the torchrun process group when WORLD_SIZE > 1 and pick this rank's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))

    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise ValueError("system.device=cuda but no CUDA device is available; use system.device=cpu")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        chosen = torch.device("cuda", local_rank)
    else:
        chosen = torch.device("cpu")

    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if use_cuda else "gloo"
        dist.init_process_group(backend=backend, device_id=chosen if use_cuda else None)
        log.info("joined process group: rank %d of %d, backend %s", rank, world_size, backend)
    return DistributedEnv(rank=rank, local_rank=local_rank, world_size=world_size, device=chosen)


def destroy_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over all ranks in place (a no-op on one process) and return it."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def broadcast_object(value, src: int = 0):
    """Return rank `src`'s `value` on every rank (JSON-like values only)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """Return the decoder layers of a `transformers` causal LM (the units FSDP shards one by one)."""
    from steel.train.loss import decoder_of

    decoder = decoder_of(model)
    layers = getattr(decoder, "layers", None) or getattr(decoder, "h", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise ValueError(f"cannot find the decoder layers of {type(model).__name__} (no `layers` ModuleList)")
    return list(layers)


def shard_model(
    root: torch.nn.Module,
    model: torch.nn.Module,
    env: DistributedEnv,
    *,
    reshard_after_forward: bool = True,
    param_dtype: torch.dtype | None = None,
) -> None:
    """Apply FSDP2 `fully_shard` to each decoder layer of `model`, then to `root` (which holds it).

    Gradients are reduced in float32; with `param_dtype` (bfloat16 on GPUs) the gathered parameters
    are cast for compute while the sharded master weights stay float32. The root keeps its
    parameters (embeddings, final norm, output layer) gathered after forward, since backward needs
    them at once.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    for layer in decoder_layers(model):
        fully_shard(layer, reshard_after_forward=reshard_after_forward, mp_policy=policy)
    fully_shard(root, reshard_after_forward=False, mp_policy=policy)
