"""Data-parallel training under torchrun: one process per device, the same global batch as one process.

    torchrun --nproc_per_node 4 -m ekd_edge distill RECIPE --run-dir runs/x

Every rank builds the same batch (the batch order is a pure function of seed and step) and keeps
its share of the rows; gradients are averaged by DistributedDataParallel. Each rank's loss is
rescaled by its share of the batch's target tokens, so the averaged gradient is the gradient of
the token mean over the *whole* batch, exactly what a single process computes. Rank 0 alone
evaluates, writes checkpoints and logs; the others wait at a barrier.

Backends: NCCL when CUDA is available (one GPU per local rank), gloo on CPU. Without torchrun
(WORLD_SIZE unset or 1) every function here is a cheap no-op, and the one process trains on the
GPU when CUDA is available; the recipe's [training] device (auto, cpu, cuda) decides, and
EKD_EDGE_DEVICE=cpu|cuda overrides it.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ekd_edge.errors import EkdError, OtherRankError, RankError

_context: "DistContext | None" = None


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


DEVICE_ENV = "EKD_EDGE_DEVICE"   # "cpu" or "cuda": overrides the recipe's [training] device
DEVICES = ("auto", "cpu", "cuda")
_preference = "auto"             # the recipe's [training] device (prefer_device)


def prefer_device(name: str) -> None:
    """Train on ``name`` ("auto": CUDA when torch sees it, else the CPU; "cpu"; "cuda").

    Called with the recipe's [training] device before training starts; EKD_EDGE_DEVICE still wins.
    A single process's context is rebuilt with the new choice; under torchrun it must come first.
    """
    global _preference, _context
    if name not in DEVICES:
        raise EkdError(f"[training] device {name!r}: expected one of {', '.join(DEVICES)}")
    _preference = name
    if _context is not None and _context.world_size == 1:
        _context = None


PRECISIONS = ("auto", "fp32", "bf16")
_precision = "auto"              # the recipe's [training] precision (prefer_precision)


def prefer_precision(name: str) -> None:
    """Mixed precision: "auto" (bf16 on CUDA, fp32 on the CPU), "fp32", or "bf16" (CUDA only)."""
    global _precision
    if name not in PRECISIONS:
        raise EkdError(f"[training] precision {name!r}: expected one of {', '.join(PRECISIONS)}")
    _precision = name


def bf16(device: torch.device | None = None) -> bool:
    """Whether forward passes on ``device`` (default: this rank's) run under bf16 autocast, and
    teachers in bf16. Only CUDA: on the CPU bf16 is slower here and changes the numbers."""
    device = device or context().device
    if _precision == "bf16" and device.type != "cuda":
        raise EkdError("[training] precision = \"bf16\" needs a CUDA device; use \"auto\" or \"fp32\" on the CPU")
    return device.type == "cuda" and _precision in ("auto", "bf16")


def autocast(device: torch.device):
    """bf16 autocast on CUDA when the precision asks for it; a no-op otherwise."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16(device))


def place_teacher(model, device: torch.device):
    """A teacher on ``device``, in eval mode, in bf16 on CUDA (it only runs forward passes)."""
    model.to(device, dtype=torch.bfloat16 if bf16(device) else torch.float32)
    return model.eval()


def wanted_device() -> str:
    """"cpu", "cuda" or "auto": the environment's choice, else the recipe's."""
    wanted = os.environ.get(DEVICE_ENV, "").strip().lower()
    if wanted not in ("", "cpu", "cuda"):
        raise EkdError(f"{DEVICE_ENV}={wanted!r}: expected cpu or cuda")
    wanted = wanted or _preference
    if wanted == "cuda" and not torch.cuda.is_available():
        raise EkdError("training device cuda was asked for (recipe [training] device or "
                       f"{DEVICE_ENV}), but torch sees no CUDA device")
    return wanted


def single_device() -> torch.device:
    """A single process trains on the GPU when CUDA is available, else on the CPU (wanted_device decides)."""
    wanted = wanted_device()
    use_cuda = wanted == "cuda" or (wanted == "auto" and torch.cuda.is_available())
    return torch.device("cuda", 0) if use_cuda else torch.device("cpu")


def context() -> DistContext:
    """The process group of this run, set up on first use from torchrun's environment variables."""
    global _context
    if _context is None:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            _context = DistContext(device=single_device())
        else:
            rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
            if torch.cuda.is_available() and wanted_device() != "cpu":
                torch.cuda.set_device(local_rank)
                device, backend = torch.device("cuda", local_rank), "nccl"
            else:
                device, backend = torch.device("cpu"), "gloo"
            if not dist.is_initialized():
                dist.init_process_group(backend=backend)
            _context = DistContext(rank, world_size, local_rank, device)
    return _context


def barrier() -> None:
    if context().enabled:
        dist.barrier()


@contextmanager
def waiting_for_main():
    """A stretch of rank-0 work (reading the corpus, writing files) that the other ranks wait out.

    Use it where a bare ``barrier()`` would follow such work: it ends in the same meeting point, but
    every rank also learns whether any rank raised inside it, and all of them stop as for an input
    error (exit 2, one line from the rank that met it). At a bare barrier the others would learn of a
    dead rank only from the process group: a lost connection, reported as a crash, or a wait until
    its timeout (torchrun's agent kills them; Slurm's srun or a hand-set RANK/WORLD_SIZE do not).
    Collectives inside the body are allowed, but a rank that fails before one of them still leaves
    the others to the process group there.
    """
    ctx = context()
    if not ctx.enabled:
        yield
        return
    failure: BaseException | None = None
    try:
        yield
    except BaseException as exc:   # met on every rank below, then raised again on this one
        failure = exc
    first = torch.tensor([ctx.world_size if failure is None else ctx.rank], dtype=torch.int64, device=ctx.device)
    dist.all_reduce(first, op=dist.ReduceOp.MIN)   # the lowest rank that failed; world_size: none did
    first = int(first.item())
    if failure is None:
        if first < ctx.world_size:
            raise OtherRankError(f"rank {first} stopped with an error; rank {ctx.rank} stops too")
        return
    if ctx.is_main or not isinstance(failure, EkdError):
        raise failure
    if first < ctx.rank:   # most often the same input error seen by every rank: the lowest one says it
        raise OtherRankError(f"rank {first} stopped with an error; rank {ctx.rank} stops too") from failure
    raise RankError(f"rank {ctx.rank}: {failure}") from failure


def shutdown() -> None:
    global _context
    if _context is not None and _context.enabled and dist.is_initialized():
        dist.destroy_process_group()
    _context = None


def wrap_model(model):
    """The model on this rank's device, inside DistributedDataParallel when there are several ranks."""
    ctx = context()
    model.to(ctx.device)
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [ctx.local_rank] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def shard_range(n: int, rank: int | None = None, world_size: int | None = None) -> range:
    """This rank's contiguous slice of ``n`` items (sizes differ by at most one).

    For work split by sentence rather than by batch (teacher caches, sequence-level decoding):
    each rank handles ``items[shard_range(len(items))]`` and ``gather_lists`` puts them back in order.
    """
    ctx = context()
    rank = ctx.rank if rank is None else rank
    world_size = ctx.world_size if world_size is None else world_size
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


def gather_lists(local: list) -> list:
    """Concatenate every rank's list in rank order (on every rank); the identity for one process."""
    if not context().enabled:
        return list(local)
    parts: list = [None] * context().world_size
    dist.all_gather_object(parts, local)
    return [item for part in parts for item in part]


def main_value(value):
    """Rank 0's ``value`` on every rank: one decision (is this file there?) that all ranks follow."""
    return gather_lists([value])[0] if context().enabled else value


def local_batch(batch: dict[str, torch.Tensor], labels: torch.Tensor) -> tuple[dict, torch.Tensor, float]:
    """This rank's rows of a global batch, and the factor that makes its token-mean loss a share of
    the global token mean under DDP's gradient averaging: local_tokens × world_size / global_tokens.

    A rank left without rows (a batch of fewer rows than ranks) computes on row 0 with factor 0,
    so it still joins the gradient all-reduce.
    """
    ctx = context()
    if not ctx.enabled:
        return batch, labels, 1.0
    rows = shard_range(labels.shape[0])
    factor_rows = rows
    if len(rows) == 0:
        rows = range(0, 1)
    pick = slice(rows.start, rows.stop)
    local = {key: value[pick] for key, value in batch.items()}
    local_labels = labels[pick]
    global_tokens = int((labels != -100).sum())
    local_tokens = int((local_labels != -100).sum()) if len(factor_rows) else 0
    factor = local_tokens * ctx.world_size / max(1, global_tokens)
    return local, local_labels, factor


def gather_rng_states() -> list[torch.Tensor]:
    """Every rank's torch CPU RNG state (rank order), for a progress checkpoint written by rank 0."""
    state = torch.get_rng_state()
    if not context().enabled:
        return [state]
    parts: list = [None] * context().world_size
    dist.all_gather_object(parts, state)
    return parts
