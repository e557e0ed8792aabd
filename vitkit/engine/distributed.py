"""Multi-process training under ``torchrun``: process group, model wrapping, metric reduction.

``torchrun --nproc_per_node=N -m vitkit run RECIPE`` sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``;
vitkit then joins the process group (nccl on GPUs, gloo on CPU), gives each process its own GPU,
shards both loaders by rank, and sums metrics across ranks. Only rank 0 prints and writes.

No wait is silent: the group's timeout (``train.wait_timeout``, ``DEFAULT_WAIT_S``) bounds every
collective (gloo raises; nccl's watchdog aborts), and a rank that waited that long fails with one line
naming what it waited for (``waiting_for``: the trainer says which step or evaluation it is in).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
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


# what gloo says when the process at the other end of a collective's connection is gone
_PEER_GONE = ("Connection reset by peer", "Connection closed by peer")
# what gloo ("Timed out waiting 600000ms for recv operation") and the store ("wait timeout after ...") say
# when a collective's peers did not come within the group's timeout
_TIMED_OUT = re.compile(r"timed out|timeout", re.IGNORECASE)

DEFAULT_WAIT_S = 600.0  # train.wait_timeout: nccl's own default; long enough for rank 0's checkpoint writes
_waiting = "the other processes"  # what a collective that times out now waits for (``waiting_for``)
_wait_s = DEFAULT_WAIT_S


def waiting_for(what: str) -> None:
    """Name what this rank's next collectives wait for (``"the gradients of epoch 2, step 5"``), for the
    one-line error when one times out."""
    global _waiting
    _waiting = what


def timed_out(err: BaseException) -> bool:
    """Whether a collective failed because its peers did not come within the group's timeout."""
    return isinstance(err, RuntimeError) and bool(_TIMED_OUT.search(str(err))) and not peer_lost(err)


def timeout_message(rank: int) -> str:
    """``rank R: waited N s for WHAT``: the start of the line a rank prints when a collective timed out."""
    return f"rank {rank}: waited {_wait_s:g} s for {_waiting}"


def peer_lost(err: BaseException) -> bool:
    """Whether a collective failed because another process of the group is gone, not because of a bug."""
    import torch.distributed

    network_error = getattr(torch.distributed, "DistNetworkError", ())
    return isinstance(err, network_error) or any(text in str(err) for text in _PEER_GONE)


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device_name: str = "auto", wait_s: float = DEFAULT_WAIT_S) -> Dist:
    """Join the process group when launched by torchrun, its collectives timing out after ``wait_s``
    seconds; a single process otherwise."""
    from datetime import timedelta

    import torch.distributed as dist

    global _wait_s
    if not launched_by_torchrun():
        return Dist()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_name in ("auto", "cuda") or device_name.startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        backend = "nccl" if use_cuda else "gloo"
        store, timeout = restart_store(rank, world), timedelta(seconds=wait_s)
        _wait_s = wait_s
        waiting_for("the other processes to join the process group")
        if store is None:
            dist.init_process_group(backend=backend, timeout=timeout)
        else:
            dist.init_process_group(backend=backend, store=store, rank=rank, world_size=world, timeout=timeout)
    return Dist(rank, world, local)


def restart_store(rank: int, world: int) -> Any:
    """The store for a worker group that torchrun restarted (``--max-restarts``), else ``None``.

    torchrun shares its rendezvous store with the workers (unless ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1``),
    and that store outlives a lost worker group: the new group's ranks would read the connection keys
    the old group left there and wait on dead peers (pytorch/pytorch#135712). A prefix per restart keeps
    each attempt's keys apart. The restart count is each launcher's own: several machines agree on it
    only if every launcher restarted as often, so multi-machine runs with restarts should set
    ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1`` (a fresh store per round; no prefix then)."""
    import torch.distributed as dist

    restarts = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    if restarts in ("", "0") or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    store, _, _ = next(dist.rendezvous("env://", rank, world))
    return dist.PrefixStore(f"vitkit/restart{restarts}/", store)


def process_device(dist_info: Dist, device: torch.device) -> torch.device:
    """Each process drives its own GPU (``cuda:LOCAL_RANK``); CPU processes share the CPU."""
    if dist_info.enabled and device.type == "cuda":
        return torch.device("cuda", dist_info.local_rank)
    return device


_held = False  # a caller keeps the group across runs (``hold_group``): a run's shutdown only waits


@contextlib.contextmanager
def hold_group(device_name: str = "auto", wait_s: float = DEFAULT_WAIT_S) -> Iterator[Dist]:
    """Join the process group and keep it across several runs in this process (``vitkit tune`` under
    torchrun: a group destroyed and made again in one process can read its old peers' addresses from the
    store and hang); it is left at the end."""
    global _held
    info = init_distributed(device_name, wait_s)
    _held = True
    try:
        yield info
    finally:
        _held = False
    shutdown()  # not after an error: the other ranks may be inside another collective; torchrun ends them


def shutdown() -> None:
    """Leave the process group together: every rank waits for the others before tearing it down
    (a rank that destroys its group while a peer still talks to it can abort at exit). Wrapped models that
    are no longer referenced are collected first: DDP's reducer holds the group, and a group torn down at
    interpreter exit instead can abort the process. While a caller holds the group (``hold_group``), only wait."""
    import gc

    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        waiting_for("the other processes to finish")
        dist.barrier()
        if not _held:
            gc.collect()
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


def gather_to_main(obj: Any) -> list[Any] | None:
    """Every rank's ``obj`` (picklable), as a list by rank on rank 0; ``None`` on the other ranks."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    gathered = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(obj, gathered, dst=0)
    return gathered


def broadcast_flag(flag: bool, device: torch.device) -> bool:
    """Rank 0's ``flag`` on every rank (rank 0 decides early stopping; everyone must stop together)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return flag
    tensor = torch.tensor([int(flag)], device=device)
    dist.broadcast(tensor, src=0)
    return bool(tensor.item())


def reduce_evaluation(result: Any, device: torch.device, whole: bool = False) -> Any:
    """An ``Evaluation`` of this rank's shard -> the split's loss and accuracies, on every rank.

    Shards are ``loaders.eval_shard`` (rank ``r`` holds split positions ``r, r + W, ...``, no
    padding), so sums over ranks count each image once. ``whole`` also gathers every rank's
    predictions, targets, probabilities and logits back into split order (what the report and its image
    grids need), for the final test; without it they stay this rank's shard."""
    import dataclasses

    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return result
    n = result.count
    sums = [result.loss * n, round(result.acc * n), round(result.top5 * n), n]
    loss, correct1, correct5, count = all_reduce_sum(sums, device).tolist()
    count = int(count)
    reduced = dataclasses.replace(
        result, loss=loss / max(count, 1), acc=correct1 / max(count, 1), top5=correct5 / max(count, 1), count=count
    )
    if not whole:
        return reduced
    return dataclasses.replace(
        reduced,
        predictions=gather_shards(result.predictions, count, device),
        targets=gather_shards(result.targets, count, device),
        probabilities=gather_shards(result.probabilities, count, device),
        logits=None if result.logits is None else gather_shards(result.logits, count, device),
    )


def gather_shards(local: torch.Tensor, total: int, device: torch.device) -> torch.Tensor:
    """Every rank's rows of a split (rank ``r`` holds rows ``r, r + W, ...``) -> all ``total`` rows
    in split order, on every rank (on CPU)."""
    import torch.distributed as dist

    world = dist.get_world_size()
    longest = -(-total // world)  # rank 0 holds the most rows
    padded = local.new_zeros((longest, *local.shape[1:]))
    padded[: len(local)] = local
    padded = padded.to(device)
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return merge_shards(parts, total).cpu()


def merge_shards(parts: list[torch.Tensor], total: int) -> torch.Tensor:
    """Rank-ordered shards, each padded to the longest, -> the ``total`` rows in split order
    (row ``m`` of rank ``r`` is split position ``m * W + r``; the padding lands past ``total``)."""
    from einops import rearrange

    return rearrange(torch.stack(parts), "w m ... -> (m w) ...")[:total]


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


def load_full_optimizer_state_dict(
    model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any], strategy: str
) -> None:
    """Load an optimizer state saved by ``full_optimizer_state_dict`` (FSDP's is keyed by parameter
    name, the others' by position; either loads under either strategy, FSDP scatters it into shards)."""
    by_name = any(isinstance(p, str) for group in state["param_groups"] for p in group["params"])
    if strategy != "fsdp" and not by_name:
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    if not state["state"]:  # saved before the first step (epoch 0): the new optimizer is that already
        return  # (loading it would first step the optimizer once to create its state)
    if not by_name:
        state = optimizer_state_by_name(model, optimizer, state)
    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))


def optimizer_state_by_name(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> dict:
    """``optimizer.state_dict()``'s positional parameter ids -> parameter names (the distributed API's keys)."""
    names = {id(p): name for name, p in model.named_parameters()}
    order = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
    return {
        "state": {order[i]: value for i, value in state["state"].items()},
        "param_groups": [{**g, "params": [order[i] for i in g["params"]]} for g in state["param_groups"]],
    }


def load_full_state_dict(model: nn.Module, state: dict[str, torch.Tensor], strategy: str) -> None:
    """Load whole weights into ``model`` (FSDP scatters them into its shards)."""
    if strategy == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        copy = {k: v.clone() for k, v in state.items()}  # loading frees the tensors it is given
        set_model_state_dict(model, copy, options=StateDictOptions(full_state_dict=True))
        return
    model.load_state_dict(state)
