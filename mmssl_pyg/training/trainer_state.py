"""What the trainer saves, restores and checks: checkpoint state, replica agreement, finite
loss terms (a mixin of :class:`~mmssl_pyg.training.trainer.Trainer`)."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from .checkpoint import BEST, LAST, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .device import seed_everything
from .distributed import state_digests


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or infinite; training stopped before the optimiser step."""


class TrainerStateMixin:
    """Checkpoint (de)serialisation and the checks between steps of :class:`Trainer`; it uses
    the trainer's attributes (``model``, optimisers, ``sampler``, ``dist``, ``epoch``, ...)."""

    def _check_replicas(self, epoch: int) -> None:
        """Stop if the replicas' states (weights, buffers, generated graphs) differ."""
        digests = self.dist.all_gather_object(state_digests(self.model))
        self.dist_log.append({'epoch': epoch, 'digests': digests})
        if any(d != digests[0] for d in digests):
            bad = [r for r, d in enumerate(digests) if d != digests[0]]
            raise RuntimeError(f'data-parallel replicas diverged after epoch {epoch}: the model '
                               f'state of rank(s) {bad} differs from rank 0 ({digests})')

    def _check_finite(self, out: dict | None, fn: str, epoch: int, batch_idx: int,
                      num_batches: int) -> dict[str, float]:
        """The loss terms as floats (under torchrun: summed over the processes that had a
        batch; ``out`` is ``None`` on a process without one); raises, on every process, if one
        is not finite."""
        if out is not None and (not isinstance(out, dict) or 'loss' not in out):
            raise TypeError(f'{type(self.model).__name__}.{fn}(batch) must return a dict with '
                            f"key 'loss', got {type(out).__name__}")
        if out is not None:
            names = list(out)
            values = torch.stack([torch.as_tensor(out[k]).detach().float().mean().cpu()
                                  for k in names])
            self._term_names[fn] = names
        else:  # no batch left for this process in the epoch's last step
            names = self._term_names[fn]
            values = torch.zeros(len(names))
        local_finite = bool(torch.isfinite(values).all())
        if self.dist.enabled:
            values = self.dist.all_reduce_(values.to(self.device)).cpu()
        finite = torch.isfinite(values)
        if not bool(finite.all()):
            bad = [names[i] for i in range(len(names)) if not finite[i]]
            term = next((k for k in bad if k != 'loss'), bad[0])
            where = (f'; the last good checkpoint is {self.checkpoint_dir / LAST} '
                     f'(epoch {self.epoch})' if self.checkpoint_dir and self.epoch else '')
            what = (f'batch index {batch_idx} (0-based, of {num_batches})'
                    if local_finite is False or not self.dist.enabled else
                    f'the batch of another process in step {batch_idx // self.dist.world_size}'
                    f' (0-based, of {num_batches} batches)')
            raise NonFiniteLossError(
                f'non-finite loss term {term!r} (= {float(values[names.index(term)])}) from '
                f'{type(self.model).__name__}.{fn} at epoch {epoch}, {what}; non-finite terms: '
                f'{bad}. Training stopped before the optimiser step{where}. Try a lower lr or '
                f'check the input features.')
        return dict(zip(names, values.tolist()))

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs (what ``last.pt`` / ``best.pt`` hold). Under torchrun
        every process must call it (it gathers each process's random state)."""
        state = {
            'model': self.model.state_dict(),
            'optimizer': None if self.optimizer is None else self.optimizer.state_dict(),
            'critic_optimizer': None if self.critic_optimizer is None
            else self.critic_optimizer.state_dict(),
            'sampler': self.sampler.state_dict(),
            'rng': rng_state(),
            'epoch': self.epoch,
            'best_metric': self.best_metric,
            'best_epoch': self.best_epoch,
            'best_val': dict(self.best_val),
            'bad_evals': self.bad_evals,
            'stopped_early': self.stopped_early,
            'history': list(self.history),
            'config': self.config.to_dict(),
            'meta': self.meta,
        }
        for name, scaler in (('scaler', self.scaler), ('critic_scaler', self.critic_scaler)):
            if scaler is not None:
                state[name] = scaler.state_dict()
        if self.dist.enabled:  # each process's noise stream, for an identical resume
            state['rng_ranks'] = self.dist.all_gather_object(state['rng'])
            state['world_size'] = self.dist.world_size
        return state

    def _load_on_rank0(self, path: Path) -> dict[str, Any]:
        """``load_checkpoint(path)`` on rank 0, broadcast to the other processes (so the run
        folder need only be readable where rank 0 runs)."""
        if not self.dist.enabled:
            return load_checkpoint(path)
        return self.dist.broadcast_object(load_checkpoint(path) if self.dist.is_main else None)

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state['model'])
        if self.optimizer is not None:
            self.optimizer.load_state_dict(state['optimizer'])
        if self.critic_optimizer is not None and state.get('critic_optimizer') is not None:
            self.critic_optimizer.load_state_dict(state['critic_optimizer'])
        self.sampler.load_state_dict(state['sampler'])
        self.epoch = int(state['epoch'])
        self.best_metric = float(state['best_metric'])
        self.best_epoch = int(state['best_epoch'])
        self.best_val = dict(state['best_val'])
        self.bad_evals = int(state['bad_evals'])
        self.stopped_early = bool(state['stopped_early'])
        self.history = list(state['history'])
        for name, scaler in (('scaler', self.scaler), ('critic_scaler', self.critic_scaler)):
            if scaler is not None and state.get(name) is not None:
                scaler.load_state_dict(state[name])
        ranks = state.get('rng_ranks')
        if self.dist.rank == 0:
            set_rng_state(state['rng'])
        elif ranks is not None and len(ranks) == self.dist.world_size:
            set_rng_state(ranks[self.dist.rank])
        else:  # saved with another number of processes: a fresh stream for this one
            seed_everything(self.config.seed + 1_000_003 * self.dist.rank + self.epoch)
        # Killed between writing last.pt and best.pt: last.pt is the best state.
        if self.dist.is_main and self.checkpoint_dir is not None and \
                self.best_epoch == self.epoch:
            best = self.checkpoint_dir / BEST
            if not best.is_file() or load_checkpoint(best)['epoch'] != self.epoch:
                save_checkpoint(state, best)

    def _save(self, improved: bool) -> None:
        if self.checkpoint_dir is None:
            if improved:
                self._best_state = copy.deepcopy(
                    {k: v.detach().cpu() if torch.is_tensor(v) else v
                     for k, v in self.model.state_dict().items()})
            return
        state = self.state_dict()
        if not self.dist.is_main:
            return
        # last.pt first: if the process dies before best.pt is written, _restore repairs it.
        save_checkpoint(state, self.checkpoint_dir / LAST)
        if improved:
            save_checkpoint(state, self.checkpoint_dir / BEST)
