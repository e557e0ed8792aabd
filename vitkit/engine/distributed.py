"""Multi-process training under ``torchrun``: process group, model wrapping, metric reduction.

``torchrun --nproc_per_node=N -m vitkit run RECIPE`` sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``;
vitkit then joins the process group (nccl on GPUs, gloo on CPU), gives each process its own GPU,
shards both loaders by rank, and sums metrics across ranks. Only rank 0 prints and writes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class Dist:
    """Where this process stands: its rank, the world size, and its local rank on the node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device_name: str = "auto") -> Dist:
    """Join the process group when launched by torchrun; a single process otherwise."""
    import torch.distributed as dist

    if not launched_by_torchrun():
        return Dist()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_name in ("auto", "cuda") or device_name.startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Dist(rank, world, local)


def process_device(dist_info: Dist, device: torch.device) -> torch.device:
    """Each process drives its own GPU (``cuda:LOCAL_RANK``); CPU processes share the CPU."""
    if dist_info.enabled and device.type == "cuda":
        return torch.device("cuda", dist_info.local_rank)
    return device


def shutdown() -> None:
    """Leave the process group together: every rank waits for the others before tearing it down
    (a rank that destroys its group while a peer still talks to it can abort at exit)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def all_reduce_sum(values: list[float] | torch.Tensor, device: torch.device) -> torch.Tensor:
    """Element-wise sum over ranks (the values themselves when not distributed)."""
    import torch.distributed as dist

    tensor = torch.as_tensor(values, dtype=torch.float64, device=device).clone()
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor


def all_reduce_min(value: int, device: torch.device) -> int:
    import torch.distributed as dist

    tensor = torch.tensor([value], dtype=torch.int64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return int(tensor.item())


def broadcast_flag(flag: bool, device: torch.device) -> bool:
    """Rank 0's ``flag`` on every rank (rank 0 decides early stopping; everyone must stop together)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return flag
    tensor = torch.tensor([int(flag)], device=device)
    dist.broadcast(tensor, src=0)
    return bool(tensor.item())


def reduce_evaluation(result: Any, device: torch.device) -> Any:
    """An ``Evaluation`` of one shard -> loss and accuracies over all shards (predictions stay local)."""
    import dataclasses

    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return result
    n = result.count
    total = all_reduce_sum([result.loss * n, result.acc * n, result.top5 * n, n], device).tolist()
    count = max(total[3], 1.0)
    return dataclasses.replace(
        result, loss=total[0] / count, acc=total[1] / count, top5=total[2] / count, count=int(total[3])
    )


def wrap_model(model: nn.Module, strategy: str, device: torch.device) -> nn.Module:
    """DistributedDataParallel, or FSDP2 (``fully_shard``: each block, then the whole model)."""
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for block in getattr(model, "blocks", ()):
            fully_shard(block)
        return fully_shard(model)
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def full_state_dict(model: nn.Module, strategy: str) -> dict[str, torch.Tensor]:
    """The whole model's weights on CPU (FSDP gathers its shards: every rank must call this)."""
    if strategy == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        # without cpu_offload every rank gets the whole weights (each keeps the best ones to test)
        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    return model.state_dict()


def full_optimizer_state_dict(model: nn.Module, optimizer: torch.optim.Optimizer, strategy: str) -> dict[str, Any]:
    """The optimizer's whole state (FSDP gathers it: every rank must call this)."""
    if strategy == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        return get_optimizer_state_dict(
            model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )
    return optimizer.state_dict()


def load_full_state_dict(model: nn.Module, state: dict[str, torch.Tensor], strategy: str) -> None:
    """Load whole weights into ``model`` (FSDP scatters them into its shards)."""
    if strategy == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        copy = {k: v.clone() for k, v in state.items()}  # loading frees the tensors it is given
        set_model_state_dict(model, copy, options=StateDictOptions(full_state_dict=True))
        return
    model.load_state_dict(state)
