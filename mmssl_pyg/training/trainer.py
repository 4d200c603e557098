"""The trainer every model shares: sampling, optimiser steps, early stopping, checkpoints."""
from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..data.graph import RecGraph
from ..models.base import Batch, Recommender, graph_signature
from .checkpoint import BEST, LAST, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .device import _amp_dtype, peak_memory_mb, resolve_device, seed_everything
from .distributed import DistContext, state_digests
from .evaluator import evaluate
from .options import ConfigError, TrainConfig, check_cutoffs
from .sampler import BPRSampler
from .tracking import NullTracker, Tracker


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or infinite; training stopped before the optimiser step."""


@dataclass
class FitResult:
    """What :meth:`Trainer.fit` returns.

    Attributes:
        best_epoch: the epoch selected on validation ``config.metric``.
        val: validation metrics of that epoch.
        test: test metrics of that epoch (the test split is evaluated once, for it only;
            empty after ``fit(test=False)``).
        history: one dict per epoch: ``epoch``, the epoch means of every loss term
            (``train/<term>`` for ``loss()``'s, ``train/critic_loss`` and ``train/critic_<term>``
            for ``critic_loss()``'s), ``epoch_seconds``, ``peak_memory_mb``, and on evaluated
            epochs ``eval_seconds`` and ``val/<metric>``.
        stopped_early: whether patience ran out before ``config.epochs``.
        checkpoint_dir: where ``best.pt`` / ``last.pt`` are (``None`` when not saved).
        resumed_from_epoch: the epoch of the ``last.pt`` a resumed run started from.
    """
    best_epoch: int
    val: dict[str, float]
    test: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False
    checkpoint_dir: Path | None = None
    resumed_from_epoch: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {'best_epoch': self.best_epoch, 'val': self.val, 'test': self.test,
                'stopped_early': self.stopped_early, 'history': self.history,
                'resumed_from_epoch': self.resumed_from_epoch,
                'checkpoint_dir': None if self.checkpoint_dir is None
                else str(self.checkpoint_dir)}


class Trainer:
    """Trains any :class:`~mmssl_pyg.models.base.Recommender` with BPR mini-batches.

    Per mini-batch, for a model with ``has_critic``: ``critic_loss(batch)`` -> backward ->
    critic optimiser step (Adam), then ``loss(batch)`` -> backward -> model optimiser step
    (AdamW); models without a critic take the second half only. The validation metric
    ``config.metric`` (``recall@20``) is computed every ``eval_every`` epochs and after the last;
    training stops after ``patience`` evaluations without improvement. The test split is
    evaluated once, at the end, on the best-validation weights (reloaded from ``best.pt``).

    Checkpoints (``checkpoint_dir/last.pt`` every epoch, ``best.pt`` when validation improves)
    are written atomically and hold the model, both optimisers, the sampler's generator, the
    torch / numpy / Python random states, the epoch, the best metric, the patience counter,
    the history and the config; ``fit(resume=True)`` continues from ``last.pt`` and ends with
    the metrics of the uninterrupted run (on CPU, where the kernels are deterministic).

    **Data parallel.** Under ``torchrun`` (an initialised ``torch.distributed`` default group,
    or ``distributed`` given) every process trains a replica on its share of each epoch's
    batches (batch ``j`` goes to rank ``j % world_size``) and the gradients are averaged
    after each backward pass; see :mod:`mmssl_pyg.training.distributed`. Only rank 0 logs,
    shows progress and writes checkpoints. With one process nothing changes.

    **Mixed precision** (``config.precision``): ``critic_loss`` / ``loss`` run under
    ``torch.autocast`` (``bf16``: GPU or CPU; ``fp16``: GPU only, with one ``GradScaler`` per
    optimiser); evaluation and the optimiser states stay float32.

    Args:
        model: the model (moved to ``config.device``).
        graph: its training graph (moved to ``config.device``).
        config: trainer options (:class:`TrainConfig` defaults when ``None``).
        tracker: receives per-epoch logs and the final summary (not finished by the trainer).
        checkpoint_dir: run folder for ``best.pt`` / ``last.pt`` (``None``: keep the best
            weights in memory and write nothing).
        meta: extra entries stored in every checkpoint (model name and options, dataset).
        distributed: the data-parallel context (default:
            :meth:`~mmssl_pyg.training.distributed.DistContext.current`, i.e. the initialised
            default process group, else a single process).
    """

    def __init__(self, model: Recommender, graph: RecGraph, config: TrainConfig | None = None,
                 tracker: Tracker | None = None, checkpoint_dir: str | Path | None = None,
                 meta: dict[str, Any] | None = None, distributed: DistContext | None = None):
        self.config = config = config or TrainConfig()
        check_cutoffs(config.ks, graph.num_items, 'ks')  # before an epoch is trained
        built_on = getattr(model, 'graph_signature', None)
        if built_on is not None and tuple(built_on) != graph_signature(graph):
            raise ValueError(
                f'{type(model).__name__} was built on another graph ({built_on[0]} users, '
                f'{built_on[1]} items, {built_on[2]} training edges) than the one given to '
                f'Trainer ({graph.num_users} users, {graph.num_items} items, '
                f'{graph.train_edge_index.size(1)} training edges). Fix: build the model on '
                f'the graph you train it on')
        self.dist = dist = distributed if distributed is not None else DistContext.current()
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        self.device = resolve_device(config.device)
        if dist.enabled and dist.backend == 'nccl':
            if self.device.type != 'cuda':
                raise ConfigError(f'the process group uses NCCL (GPUs) but device is '
                                  f'{str(self.device)!r}; use device cuda (or a gloo group on CPU)')
            if self.device.index is None:
                self.device = torch.device('cuda', dist.local_rank)
        self.amp_dtype = _amp_dtype(config.precision, self.device)
        self.model = model.to(self.device)
        self.graph = graph.to(self.device)
        self.tracker = (tracker or NullTracker()) if dist.is_main else NullTracker()
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.meta = dict(meta or {})
        self.sampler = BPRSampler(graph, config.batch_size, seed=config.seed,
                                  batches_per_epoch=config.batches_per_epoch)
        #: ``False`` for a model without parameters (``Recommender.trainable``): one epoch,
        #: no mini-batches, no optimiser.
        self.trains = bool(getattr(model, 'trainable', True))
        params = [p for p in model.model_parameters() if p.requires_grad]
        if not params and self.trains:
            raise ValueError(f'{type(model).__name__} has no trainable parameters')
        self.optimizer = None if not self.trains else torch.optim.AdamW(
            params, lr=config.lr, weight_decay=config.weight_decay)
        self.critic_optimizer = None
        if getattr(model, 'has_critic', False):
            critic = [p for p in model.critic_parameters() if p.requires_grad]
            if not critic:
                raise ValueError(f'{type(model).__name__}.has_critic is True but '
                                 f'critic_parameters() returned no trainable parameters')
            self.critic_optimizer = torch.optim.Adam(
                critic, lr=config.critic_lr, betas=tuple(config.critic_betas),
                weight_decay=config.critic_weight_decay)
        self._model_params = params
        self._critic_params = [] if self.critic_optimizer is None else critic
        # fp16: one loss scaler per optimiser (each step has its own backward pass)
        fp16 = config.precision == 'fp16'
        self.scaler = torch.amp.GradScaler(self.device.type) if fp16 else None
        self.critic_scaler = torch.amp.GradScaler(self.device.type) \
            if fp16 and self.critic_optimizer is not None else None
        if dist.enabled:
            n = len(self.sampler)
            if n < dist.world_size:
                raise ConfigError(f'an epoch has {n} mini-batches but {dist.world_size} '
                                  f'processes: every process needs at least one batch per epoch '
                                  f'(raise batches_per_epoch or use fewer processes)')
            dist.broadcast_module(self.model)  # identical replicas whatever each process built
        self.dist_log: list[dict[str, Any]] = []  # per epoch: every rank's state digests
        self._term_names: dict[str, list[str]] = {}
        self._critic_keys: set[str] = set()
        self.epoch = 0
        self.best_metric = -math.inf
        self.best_epoch = 0
        self.best_val: dict[str, float] = {}
        self.bad_evals = 0
        self.stopped_early = False
        self.history: list[dict[str, Any]] = []
        self._best_state: dict | None = None  # in-memory best weights without checkpoint_dir

    # -----------------------------------------------------------------------------------------
    # public API

    def fit(self, resume: bool = False, test: bool = True) -> FitResult:
        """Train until ``config.epochs`` or early stopping, then test the best epoch once.

        Args:
            resume: continue from ``checkpoint_dir/last.pt`` when it exists (a fresh start
                otherwise).
            test: evaluate the best epoch on the test split (``False``: the test split is never
                read and ``FitResult.test`` is empty; hyper-parameter search uses this).
        """
        resumed_from = self._start(resume)
        self.tracker.log_config({'train': self.config.to_dict(), **self.meta})
        last_epoch = self.config.epochs if self.trains else 1  # nothing changes after one epoch
        bar = _tqdm(range(self.epoch + 1, last_epoch + 1), self._progress, desc='epochs',
                    unit='epoch', initial=self.epoch, total=last_epoch)
        for epoch in bar:
            if self.stopped_early:
                break
            record = self._train_epoch(epoch)
            improved = self._validate(epoch, last_epoch, record)
            self._end_epoch(epoch, record, improved, bar)
        if hasattr(bar, 'close'):
            bar.close()
        return self._finish(test, resumed_from)

    def _start(self, resume: bool) -> int | None:
        """Restore ``last.pt`` when resuming (returns its epoch), else seed a fresh start."""
        cfg = self.config
        last = self.checkpoint_dir / LAST if self.checkpoint_dir else None
        has_last = self.dist.broadcast_object(
            bool(resume and last is not None and last.is_file()))
        if not has_last:
            # each process its own noise stream (dropout, Gumbel, ...); rank 0 is the
            # single-process stream; every process draws the same batches
            seed_everything(cfg.seed + self.dist.rank)
            self.sampler.generator.manual_seed(cfg.seed)
            return None
        self._restore(self._load_on_rank0(last))
        if self.stopped_early and (not cfg.patience or self.bad_evals < cfg.patience):
            self.stopped_early = False  # resumed with more patience: it trains on
        return self.epoch

    def _validate(self, epoch: int, last_epoch: int, record: dict[str, Any]) -> bool:
        """On an evaluation epoch: validation metrics into ``record``, best epoch and patience
        updated; returns whether validation improved."""
        cfg = self.config
        if epoch % cfg.eval_every != 0 and epoch != last_epoch:
            return False
        t0 = time.perf_counter()
        val = evaluate(self.model, self.graph, 'val', cfg.ks, batch_size=cfg.eval_batch_size,
                       progress=self._progress, **self._eval_kwargs())
        record['eval_seconds'] = self._elapsed(t0)
        record.update({f'val/{k}': v for k, v in val.items()})
        improved = val[cfg.metric] > self.best_metric
        if improved:
            self.best_metric, self.best_epoch, self.best_val = val[cfg.metric], epoch, val
            self.bad_evals = 0
        else:
            self.bad_evals += 1
        if cfg.patience and self.bad_evals >= cfg.patience:
            self.stopped_early = True
        return improved

    def _end_epoch(self, epoch: int, record: dict[str, Any], improved: bool, bar) -> None:
        """Record the epoch (history, tracker, progress bar) and save the checkpoints."""
        record['peak_memory_mb'] = self._peak_memory_mb()
        self.epoch = epoch
        self.history.append(record)
        self.tracker.log({k: v for k, v in record.items() if k != 'epoch'}, step=epoch)
        self._save(improved)
        if hasattr(bar, 'set_postfix'):
            bar.set_postfix({k: f'{v:.4g}' for k, v in record.items()
                             if k in ('train/loss', f'val/{self.config.metric}')})

    def _finish(self, test: bool, resumed_from: int | None) -> FitResult:
        """Test the best epoch once (unless ``test`` is false), log the summary, return."""
        test = self._test_best() if test else {}
        summary = {'best_epoch': self.best_epoch, **{f'val/{k}': v for k, v in
                                                      self.best_val.items()},
                   **{f'test/{k}': v for k, v in test.items()}}
        self.tracker.summary(summary)
        return FitResult(self.best_epoch, dict(self.best_val), test, list(self.history),
                         self.stopped_early, self.checkpoint_dir, resumed_from)

    # -----------------------------------------------------------------------------------------
    # one epoch

    @property
    def _progress(self) -> bool:
        return bool(self.config.progress) and self.dist.is_main

    def _eval_kwargs(self) -> dict[str, Any]:
        return {'distributed': self.dist} if self.dist.enabled else {}

    def _peak_memory_mb(self) -> float:
        """This process's peak (the largest of all processes' under torchrun)."""
        peak = peak_memory_mb(self.device)
        if self.dist.enabled:
            t = torch.tensor([peak], dtype=torch.float64, device=self.device)
            peak = float(self.dist.all_reduce_(t, 'max'))
        return peak

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _draw_epoch(self, n: int) -> list[Batch]:
        """The epoch's ``n`` batches, drawn up front (the sampler's stream is the same as
        drawing them one at a time), each with :attr:`Batch.final` set.

        Batch ``b`` goes to process ``b % W`` at step ``b // W``. Per-user state collected
        during an epoch keeps a user's latest step, and within a step the highest rank
        (:meth:`~mmssl_pyg.models.MMSSL.gather_epoch_state`), i.e. the user's last batch in
        draw order: that batch is where the user is final."""
        batches = [self.sampler.sample() for _ in range(n)]
        users = torch.cat([b.users for b in batches])
        order = torch.cat([torch.full((len(b),), i, dtype=torch.long)
                           for i, b in enumerate(batches)])
        last = torch.full((self.sampler.num_users,), -1, dtype=torch.long)
        last.scatter_reduce_(0, users, order, reduce='amax')
        for i, b in enumerate(batches):
            b.final = last[b.users] == i
        return batches

    def _next_batch(self, batches: list[Batch], step: int) -> Batch | None:
        """This process's batch of step ``step``: batch ``step * W + rank``; ``None`` when the
        epoch's batches are used up."""
        index = step * self.dist.world_size + self.dist.rank
        return batches[index].to(self.device) if index < len(batches) else None

    def _backward_step(self, loss, optimizer, scaler, params, contributors: int) -> None:
        """Backward (scaled in fp16), average gradients over the processes, step."""
        if loss is not None:
            (scaler.scale(loss) if scaler is not None else loss).backward()
        self.dist.average_gradients(params, contributors)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()

    def _train_epoch(self, epoch: int) -> dict[str, Any]:
        """One epoch of mini-batch steps (a critic step when due, then a model step); returns
        the epoch's record: mean loss terms and seconds."""
        model = self.model
        if self.device.type == 'cuda':
            torch.cuda.reset_peak_memory_stats(self.device)
        t0 = time.perf_counter()
        model.train()
        model.on_epoch_start(epoch)
        sums: dict[str, float] = {}
        n = len(self.sampler)
        world = self.dist.world_size
        steps = math.ceil(n / world) if self.trains else 0
        critic_batches = 0  # batches (over all processes) that ran a critic step
        batches = self._draw_epoch(n) if self.trains else []
        bar = _tqdm(range(steps), self._progress, desc=f'epoch {epoch}', unit='batch',
                    leave=False)
        for step in bar:
            batch = self._next_batch(batches, step)
            contributors = min(world, n - step * world)  # processes with a batch this step
            where = (epoch, step * world + self.dist.rank, n)
            # the critic schedule counts steps over the run, so a resumed run keeps its phase
            critic_due = ((epoch - 1) * steps + step) % self.config.critic_every == 0
            if self.critic_optimizer is not None and critic_due:
                critic_batches += contributors
                self._critic_step(batch, contributors, where, sums)
            values = self._model_step(batch, contributors, where, sums)
            if hasattr(bar, 'set_postfix') and step % 10 == 0:
                bar.set_postfix(loss=f'{values["loss"] / contributors:.4g}')
        if hasattr(bar, 'close'):
            bar.close()
        return self._end_train_epoch(epoch, sums, critic_batches, n, t0)

    def _critic_step(self, batch: Batch | None, contributors: int, where: tuple,
                     sums: dict[str, float]) -> None:
        """``critic_loss`` -> backward -> critic optimiser step; its terms added to ``sums``.
        ``where``: ``(epoch, batch index, batches in the epoch)`` for error messages."""
        self.critic_optimizer.zero_grad(set_to_none=True)
        values = self._loss_step(batch, 'critic_loss', self.critic_optimizer,
                                 self.critic_scaler, self._critic_params, contributors, where)
        for k, v in values.items():
            key = f'train/{_critic_key(k, values)}'
            sums[key] = sums.get(key, 0.0) + v
            self._critic_keys.add(key)

    def _model_step(self, batch: Batch | None, contributors: int, where: tuple,
                    sums: dict[str, float]) -> dict[str, float]:
        """``loss`` -> backward -> model optimiser step; returns its terms (also added to
        ``sums``)."""
        self.optimizer.zero_grad(set_to_none=True)
        if self.critic_optimizer is not None:  # L_G backpropagates into the critic too
            self.critic_optimizer.zero_grad(set_to_none=True)
        values = self._loss_step(batch, 'loss', self.optimizer, self.scaler,
                                 self._model_params, contributors, where)
        for k, v in values.items():
            sums[f'train/{k}'] = sums.get(f'train/{k}', 0.0) + v
        return values

    def _loss_step(self, batch: Batch | None, fn: str, optimizer, scaler, params,
                   contributors: int, where: tuple) -> dict[str, float]:
        """``model.<fn>(batch)`` (under autocast; skipped on a process without a batch) ->
        finite check -> backward -> optimiser step; returns the loss terms."""
        out = None
        if batch is not None:
            with self._autocast():
                out = getattr(self.model, fn)(batch)
        values = self._check_finite(out, fn, *where)
        self._backward_step(None if out is None else out['loss'], optimizer, scaler, params,
                            contributors)
        return values

    def _end_train_epoch(self, epoch: int, sums: dict[str, float], critic_batches: int,
                         n: int, t0: float) -> dict[str, Any]:
        """Merge the replicas' epoch state, end the model's epoch, average the loss terms."""
        model = self.model
        if self.dist.enabled:  # merge what each replica collected, so all swap in the same
            model.gather_epoch_state(self.dist.all_gather)
            self.dist.average_buffers(model)
        model.on_epoch_end(epoch)
        # critic terms average over the batches that ran a critic step
        record = {'epoch': epoch, **{k: v / (critic_batches if k in self._critic_keys else n)
                                     for k, v in sums.items()}}
        if self.dist.enabled:
            self._check_replicas(epoch)
            record['dist/world_size'] = self.dist.world_size
        record['epoch_seconds'] = self._elapsed(t0)
        return record

    # -----------------------------------------------------------------------------------------
    # checks between steps

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

    # -----------------------------------------------------------------------------------------
    # checkpoint state

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

    def _elapsed(self, t0: float) -> float:
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - t0

    def _test_best(self) -> dict[str, float]:
        cfg = self.config
        if self.best_epoch == 0:
            key = f'val/{cfg.metric}'
            seen = [r[key] for r in self.history if key in r]
            if seen:  # fit validated, but no value compared greater than -inf
                raise RuntimeError(
                    f'validation {cfg.metric} was not a number at any of the {len(seen)} '
                    f'evaluation(s) ({seen[-1]} at the last), so no epoch can be selected to '
                    f'test; check that the model\'s embeddings are finite')
            raise RuntimeError('no validation evaluation took place, so there is no best epoch '
                               'to test (epochs must be >= 1)')
        if self.checkpoint_dir is not None:
            self.dist.barrier()  # rank 0 has written best.pt
            state = self._load_on_rank0(self.checkpoint_dir / BEST)
            if int(state['epoch']) != self.best_epoch:
                raise RuntimeError(f'{self.checkpoint_dir / BEST} holds epoch {state["epoch"]}, '
                                   f'but the best epoch is {self.best_epoch}')
            self.model.load_state_dict(state['model'])
        elif self._best_state is not None:
            self.model.load_state_dict(self._best_state)
        return evaluate(self.model, self.graph, 'test', cfg.ks,
                        exclude_val_at_test=cfg.exclude_val_at_test,
                        batch_size=cfg.eval_batch_size, progress=self._progress,
                        **self._eval_kwargs())


def _critic_key(term: str, terms: dict) -> str:
    """Log name of a ``critic_loss`` term: ``loss`` -> ``critic_loss``, ``gp`` ->
    ``critic_gp``; names that already start with ``critic`` are kept (``critic``)."""
    if term == 'loss':
        return 'critic_loss'
    if term.startswith('critic') and term != 'critic_loss':
        return term
    return f'critic_{term}'


def _tqdm(iterable, enabled: bool, **kwargs):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm
    return tqdm(iterable, dynamic_ncols=True, **kwargs)
