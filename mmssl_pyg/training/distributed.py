r"""Data-parallel training over several processes (``torchrun``), one model replica each.

``mmssl-pyg train`` (and :class:`~mmssl_pyg.training.Trainer` in a script) runs under
``torchrun``::

    # one machine, 4 processes (GPUs: one per process; CPUs: gloo)
    torchrun --nproc_per_node=4 -m mmssl_pyg.cli train --dataset tiktok
    # two machines, 8 GPUs each: run on every node, same --rdzv_endpoint
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d \
        --rdzv_endpoint=HOST0:29500 --rdzv_id=mmssl-run-1 -m mmssl_pyg.cli train ...

:func:`init_distributed` reads ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` (set by ``torchrun``)
and starts the process group: NCCL with device ``cuda:LOCAL_RANK`` when the run's device is a
GPU, gloo on CPUs. Without those variables (or with ``WORLD_SIZE=1``) nothing changes.

**What each process does** (see :class:`~mmssl_pyg.training.Trainer`):

* *Batches.* Every process owns the same seeded :class:`~mmssl_pyg.training.BPRSampler` and
  draws the whole epoch's batch sequence; process ``r`` of ``W`` trains on batches
  ``r, r + W, r + 2W, ...``. An epoch keeps its single-process length (``ceil(|train| /
  batch_size)`` batches, or ``batches_per_epoch``) in total; it takes ``ceil(n / W)``
  optimiser steps, each averaging the gradients of up to ``W`` batches (effective batch
  ``W * batch_size`` users; the learning rate is not rescaled). In the last step of an epoch
  with ``n % W != 0`` the processes without a batch contribute no gradient and the average is
  over the processes that had one.
* *Gradients.* After each backward pass, the gradients of the parameters being stepped (the
  critic's after ``critic_loss``, the model's after ``loss``) are averaged with an explicit
  bucketed ``all_reduce`` (:meth:`DistContext.average_gradients`), then each process takes the
  same optimiser step. ``DistributedDataParallel`` does not fit the models' contract: they are
  driven through ``critic_loss`` / ``loss`` (not ``forward``), MMSSL caches its forward pass
  on ``batch.cache`` between the two and freezes the critic during ``loss``, so two backward
  passes per batch reach two different parameter sets.
* *Epoch state.* At the end of an epoch the trainer calls
  ``model.gather_epoch_state(all_gather)`` (MMSSL: every process's generated top-k
  neighbours), averages the floating persistent buffers (BatchNorm running statistics) and
  then ``model.on_epoch_end``, so every replica swaps in the same graphs; it then compares a
  SHA-256 digest of every replica's state and stops if they differ.
* *Evaluation* ranks a disjoint share of the users on each process; the per-user metric sums
  and counts are all-reduced.
* *Output.* Only rank 0 prints, logs to wandb and writes checkpoints; on ``--resume`` rank 0
  reads ``last.pt`` and broadcasts it, and each process restores its own random state.
"""
from __future__ import annotations

import datetime
import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

ENV_VARS = ('RANK', 'WORLD_SIZE', 'LOCAL_RANK')


@dataclass
class DistContext:
    """Where this process stands in a data-parallel run (``world_size == 1``: alone; every
    method is then a no-op).

    Attributes:
        rank: global rank.
        world_size: number of processes.
        local_rank: rank on this machine (the GPU index with NCCL).
        backend: ``'nccl'`` / ``'gloo'`` (``None`` when alone).
        owns_group: whether :func:`init_distributed` started the process group (and
            :meth:`shutdown` should end it).
    """
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def current(cls) -> DistContext:
        """The context of an already initialised default process group (else alone)."""
        import torch.distributed as dist
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return cls()
        return cls(dist.get_rank(), dist.get_world_size(),
                   int(os.environ.get('LOCAL_RANK', 0)), dist.get_backend())

    # ------------------------------------------------------------------ collectives
    def all_reduce_(self, tensor: Tensor, op: str = 'sum') -> Tensor:
        """In-place ``all_reduce`` (``op``: ``'sum'``, ``'max'`` or ``'min'``)."""
        if self.enabled:
            import torch.distributed as dist
            ops = {'sum': dist.ReduceOp.SUM, 'max': dist.ReduceOp.MAX,
                   'min': dist.ReduceOp.MIN}
            dist.all_reduce(tensor, op=ops[op])
        return tensor

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        """``obj`` of rank ``src`` on every process (pickled; for small or rare objects)."""
        if not self.enabled:
            return obj
        import torch.distributed as dist
        box = [obj if self.rank == src else None]
        dist.broadcast_object_list(box, src=src)
        return box[0]

    def all_gather_object(self, obj: Any) -> list[Any]:
        """Every process's ``obj``, in rank order."""
        if not self.enabled:
            return [obj]
        import torch.distributed as dist
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def all_gather(self, tensor: Tensor) -> list[Tensor]:
        """Every process's ``tensor`` in rank order; the first dimension may differ between
        processes (the others must agree). ``bool`` tensors travel as ``uint8``."""
        if not self.enabled:
            return [tensor]
        import torch.distributed as dist
        is_bool = tensor.dtype == torch.bool
        t = tensor.to(torch.uint8) if is_bool else tensor
        t = t.contiguous()
        sizes = torch.tensor([t.size(0)], dtype=torch.long, device=t.device)
        all_sizes = [torch.zeros_like(sizes) for _ in range(self.world_size)]
        dist.all_gather(all_sizes, sizes)
        all_sizes = [int(s) for s in all_sizes]
        longest = max(all_sizes)
        if t.size(0) < longest:
            pad = t.new_zeros((longest - t.size(0), *t.shape[1:]))
            t = torch.cat([t, pad], 0)
        out = [torch.empty_like(t) for _ in range(self.world_size)]
        dist.all_gather(out, t)
        out = [o[:n] for o, n in zip(out, all_sizes)]
        return [o.bool() for o in out] if is_bool else out

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist
            dist.barrier()

    # ------------------------------------------------------------------ model replicas
    def average_gradients(self, params: Sequence[torch.nn.Parameter], num_contributors: int,
                          bucket_bytes: int = 64 << 20) -> None:
        """Average ``params``' gradients over the processes that computed one this step.

        Each process adds its gradients (zeros where it has none) and a presence flag per
        parameter into flat buckets of at most ``bucket_bytes``, one ``all_reduce`` per bucket;
        the sums are divided by ``num_contributors`` (the processes that had a batch). A
        parameter that no process gave a gradient keeps ``grad = None`` everywhere, so the
        optimisers skip it exactly as in a single process.
        """
        if not self.enabled:
            return
        params = list(params)
        flags = torch.tensor([0.0 if p.grad is None else 1.0 for p in params],
                             device=params[0].device if params else 'cpu')
        self.all_reduce_(flags)
        present = [p for p, f in zip(params, flags.tolist()) if f > 0]
        scale = 1.0 / max(int(num_contributors), 1)
        for bucket in _buckets(present, bucket_bytes):
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in bucket]
            flat = torch.cat([g.reshape(-1) for g in grads])
            self.all_reduce_(flat)
            flat.mul_(scale)
            offset = 0
            for p in bucket:
                n = p.numel()
                value = flat[offset:offset + n].view_as(p)
                if p.grad is None:
                    p.grad = value.clone()
                else:
                    p.grad.copy_(value)
                offset += n

    def broadcast_module(self, module: torch.nn.Module, src: int = 0) -> None:
        """Copy the parameters and persistent buffers of rank ``src`` to every process."""
        if not self.enabled:
            return
        import torch.distributed as dist
        with torch.no_grad():
            for t in _state_tensors(module):
                dist.broadcast(t.data, src=src)

    def average_buffers(self, module: torch.nn.Module) -> None:
        """Average the floating persistent buffers (e.g. BatchNorm running statistics) over
        the processes; integer buffers (batch counters) take rank 0's value."""
        if not self.enabled:
            return
        import torch.distributed as dist
        with torch.no_grad():
            for b in _persistent_buffers(module):
                if b.is_floating_point():
                    dist.all_reduce(b)
                    b.div_(self.world_size)
                else:
                    dist.broadcast(b, src=0)

    def shutdown(self) -> None:
        """End the process group if :func:`init_distributed` started it."""
        if self.owns_group:
            import torch.distributed as dist
            if dist.is_initialized():
                dist.destroy_process_group()
            self.owns_group = False


def _buckets(params: list[torch.nn.Parameter], bucket_bytes: int) -> Iterable[list]:
    bucket, size = [], 0
    for p in params:
        nbytes = p.numel() * p.element_size()
        same_dtype = not bucket or bucket[0].dtype == p.dtype
        if bucket and (size + nbytes > bucket_bytes or not same_dtype):
            yield bucket
            bucket, size = [], 0
        bucket.append(p)
        size += nbytes
    if bucket:
        yield bucket


def _persistent_buffers(module: torch.nn.Module) -> list[Tensor]:
    out = []
    for mod in module.modules():
        skip = getattr(mod, '_non_persistent_buffers_set', set())
        out.extend(b for name, b in mod.named_buffers(recurse=False)
                   if b is not None and name not in skip)
    return out


def _state_tensors(module: torch.nn.Module) -> list[Tensor]:
    seen, out = set(), []
    for t in [*module.parameters(), *_persistent_buffers(module)]:
        if id(t) not in seen:
            seen.add(id(t))
            out.append(t)
    return out


def env_world_size() -> int:
    """``WORLD_SIZE`` of the environment (``1`` when not launched by ``torchrun``)."""
    return int(os.environ.get('WORLD_SIZE', '1') or 1)


def init_distributed(device: str | torch.device = 'auto',
                     timeout_minutes: float = 30.0) -> tuple[DistContext, str]:
    """Join the ``torchrun`` process group, if there is one.

    Returns ``(context, device)``: alone (``world_size == 1``, device unchanged) when
    ``WORLD_SIZE`` is unset or 1; otherwise NCCL and ``cuda:LOCAL_RANK`` when ``device`` is
    ``'cuda'`` / ``'cuda:N'``, or ``'auto'`` with CUDA available, and gloo with ``'cpu'``
    elsewhere. An already initialised default group is reused (and not ended by
    :meth:`DistContext.shutdown`).
    """
    import torch.distributed as dist
    world = env_world_size()
    if world <= 1:
        return DistContext(), str(device)
    missing = [v for v in ENV_VARS if v not in os.environ]
    if missing:
        raise RuntimeError(f'WORLD_SIZE={world} but {", ".join(missing)} is not set: launch '
                           f'with torchrun (python -m torch.distributed.run), which sets '
                           f'RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT')
    if not dist.is_available():
        raise RuntimeError('this torch build has no torch.distributed; cannot run with '
                           f'WORLD_SIZE={world}')
    rank, local_rank = int(os.environ['RANK']), int(os.environ['LOCAL_RANK'])
    want = str(device)
    use_cuda = want.startswith('cuda') or (want == 'auto' and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise RuntimeError(f'device {want!r} was asked for but CUDA is not available; use '
                               f'--device cpu (gloo) for CPU processes')
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f'LOCAL_RANK={local_rank} but this machine has '
                               f'{torch.cuda.device_count()} GPU(s): use --nproc_per_node <= '
                               f'the number of GPUs')
        torch.cuda.set_device(local_rank)
        backend, device = 'nccl', f'cuda:{local_rank}'
    else:
        backend, device = 'gloo', 'cpu'
    owns = False
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_minutes))
        owns = True
    ctx = DistContext(rank, world, local_rank, dist.get_backend(), owns)
    return ctx, device


def state_digests(module: torch.nn.Module) -> dict[str, str]:
    """SHA-256 digests of ``module.state_dict()``: ``'weights'`` (parameters and persistent
    buffers) and ``'extra'`` (the ``get_extra_state`` entries: MMSSL's generated graphs)."""
    digests = {'weights': hashlib.sha256(), 'extra': hashlib.sha256()}
    for key, value in module.state_dict().items():
        h = digests['extra' if key.endswith('_extra_state') else 'weights']
        h.update(key.encode())
        _hash_into(h, value)
    return {k: h.hexdigest() for k, h in digests.items()}


def _hash_into(h, value) -> None:
    if isinstance(value, Tensor):
        t = value.detach().cpu().contiguous()
        if t.dtype == torch.bool:
            t = t.to(torch.uint8)
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        if t.numel():
            h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, dict):
        for k in sorted(value, key=str):
            h.update(str(k).encode())
            _hash_into(h, value[k])
    elif isinstance(value, (list, tuple)):
        h.update(f'[{len(value)}'.encode())
        for v in value:
            _hash_into(h, v)
    else:
        h.update(repr(value).encode())
