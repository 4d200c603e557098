"""The trainer every model shares: sampling, optimiser steps, early stopping, checkpoints."""
from __future__ import annotations

import copy
import math
import random
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.graph import RecGraph
from ..models.base import Batch, Recommender
from .checkpoint import BEST, LAST, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import TrainConfig
from .evaluator import evaluate
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
        test: test metrics of that epoch (the test split is evaluated once, for it only).
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


def resolve_device(device: str | torch.device = 'auto') -> torch.device:
    """``'auto'`` -> ``cuda`` when available, else ``cpu``; other values are checked."""
    if str(device) == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    device = torch.device(device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise RuntimeError(f'device {str(device)!r} was asked for but CUDA is not available '
                           f"(torch {torch.__version__}); use --device cpu or auto")
    return device


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory in MiB: ``torch.cuda.max_memory_allocated`` on a GPU (reset per epoch by
    the trainer), the process's peak resident set size (``ru_maxrss``, never reset) on CPU."""
    if device.type == 'cuda':
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == 'darwin' else rss / 2**10  # bytes on macOS, else KiB


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

    Args:
        model: the model (moved to ``config.device``).
        graph: its training graph (moved to ``config.device``).
        config: trainer options (:class:`TrainConfig` defaults when ``None``).
        tracker: receives per-epoch logs and the final summary (not finished by the trainer).
        checkpoint_dir: run folder for ``best.pt`` / ``last.pt`` (``None``: keep the best
            weights in memory and write nothing).
        meta: extra entries stored in every checkpoint (model name and options, dataset).
    """

    def __init__(self, model: Recommender, graph: RecGraph, config: TrainConfig | None = None,
                 tracker: Tracker | None = None, checkpoint_dir: str | Path | None = None,
                 meta: dict[str, Any] | None = None):
        self.config = config = config or TrainConfig()
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        self.device = resolve_device(config.device)
        self.model = model.to(self.device)
        self.graph = graph.to(self.device)
        self.tracker = tracker or NullTracker()
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.meta = dict(meta or {})
        self.sampler = BPRSampler(graph, config.batch_size, seed=config.seed,
                                  batches_per_epoch=config.batches_per_epoch)
        params = [p for p in model.model_parameters() if p.requires_grad]
        if not params:
            raise ValueError(f'{type(model).__name__} has no trainable parameters')
        self.optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        self.critic_optimizer = None
        if getattr(model, 'has_critic', False):
            critic = [p for p in model.critic_parameters() if p.requires_grad]
            if not critic:
                raise ValueError(f'{type(model).__name__}.has_critic is True but '
                                 f'critic_parameters() returned no trainable parameters')
            self.critic_optimizer = torch.optim.Adam(
                critic, lr=config.critic_lr, betas=tuple(config.critic_betas),
                weight_decay=config.critic_weight_decay)
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

    def fit(self, resume: bool = False) -> FitResult:
        """Train until ``config.epochs`` or early stopping, then test the best epoch once.

        Args:
            resume: continue from ``checkpoint_dir/last.pt`` when it exists (a fresh start
                otherwise).
        """
        cfg = self.config
        last = self.checkpoint_dir / LAST if self.checkpoint_dir else None
        resumed_from = None
        if resume and last is not None and last.is_file():
            self._restore(load_checkpoint(last))
            resumed_from = self.epoch
        else:
            seed_everything(cfg.seed)
            self.sampler.generator.manual_seed(cfg.seed)
        self.tracker.log_config({'train': cfg.to_dict(), **self.meta})

        epochs = range(self.epoch + 1, cfg.epochs + 1)
        bar = _tqdm(epochs, cfg.progress, desc='epochs', unit='epoch', initial=self.epoch,
                    total=cfg.epochs)
        for epoch in bar:
            if self.stopped_early:
                break
            record = self._train_epoch(epoch)
            improved = False
            if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
                t0 = time.perf_counter()
                val = evaluate(self.model, self.graph, 'val', cfg.ks,
                               batch_size=cfg.eval_batch_size, progress=cfg.progress)
                record['eval_seconds'] = self._elapsed(t0)
                record.update({f'val/{k}': v for k, v in val.items()})
                if val[cfg.metric] > self.best_metric:
                    improved = True
                    self.best_metric, self.best_epoch, self.best_val = val[cfg.metric], epoch, val
                    self.bad_evals = 0
                else:
                    self.bad_evals += 1
                if cfg.patience and self.bad_evals >= cfg.patience:
                    self.stopped_early = True
            record['peak_memory_mb'] = peak_memory_mb(self.device)
            self.epoch = epoch
            self.history.append(record)
            self.tracker.log({k: v for k, v in record.items() if k != 'epoch'}, step=epoch)
            self._save(improved)
            if hasattr(bar, 'set_postfix'):
                bar.set_postfix({k: f'{v:.4g}' for k, v in record.items()
                                 if k in ('train/loss', f'val/{cfg.metric}')})
        if hasattr(bar, 'close'):
            bar.close()

        test = self._test_best()
        summary = {'best_epoch': self.best_epoch, **{f'val/{k}': v for k, v in
                                                      self.best_val.items()},
                   **{f'test/{k}': v for k, v in test.items()}}
        self.tracker.summary(summary)
        return FitResult(self.best_epoch, dict(self.best_val), test, list(self.history),
                         self.stopped_early, self.checkpoint_dir, resumed_from)

    # -----------------------------------------------------------------------------------------
    # one epoch

    def _train_epoch(self, epoch: int) -> dict[str, Any]:
        cfg, model = self.config, self.model
        if self.device.type == 'cuda':
            torch.cuda.reset_peak_memory_stats(self.device)
        t0 = time.perf_counter()
        model.train()
        model.on_epoch_start(epoch)
        sums: dict[str, float] = {}
        n = len(self.sampler)
        bar = _tqdm(range(n), cfg.progress, desc=f'epoch {epoch}', unit='batch', leave=False)
        for batch_idx in bar:
            batch: Batch = self.sampler.sample().to(self.device)
            if self.critic_optimizer is not None:
                self.critic_optimizer.zero_grad(set_to_none=True)
                out = model.critic_loss(batch)
                values = self._check_finite(out, 'critic_loss', epoch, batch_idx, n)
                out['loss'].backward()
                self.critic_optimizer.step()
                for k, v in values.items():
                    key = f'train/{_critic_key(k, values)}'
                    sums[key] = sums.get(key, 0.0) + v
            self.optimizer.zero_grad(set_to_none=True)
            if self.critic_optimizer is not None:  # L_G backpropagates into the critic too
                self.critic_optimizer.zero_grad(set_to_none=True)
            out = model.loss(batch)
            values = self._check_finite(out, 'loss', epoch, batch_idx, n)
            out['loss'].backward()
            self.optimizer.step()
            for k, v in values.items():
                sums[f'train/{k}'] = sums.get(f'train/{k}', 0.0) + v
            if hasattr(bar, 'set_postfix') and batch_idx % 10 == 0:
                bar.set_postfix(loss=f'{values["loss"]:.4g}')
        if hasattr(bar, 'close'):
            bar.close()
        model.on_epoch_end(epoch)
        record = {'epoch': epoch, **{k: v / n for k, v in sums.items()}}
        record['epoch_seconds'] = self._elapsed(t0)
        return record

    def _check_finite(self, out: dict, fn: str, epoch: int, batch_idx: int,
                      num_batches: int) -> dict[str, float]:
        if not isinstance(out, dict) or 'loss' not in out:
            raise TypeError(f'{type(self.model).__name__}.{fn}(batch) must return a dict with '
                            f"key 'loss', got {type(out).__name__}")
        names = list(out)
        values = torch.stack([torch.as_tensor(out[k]).detach().float().mean().cpu()
                              for k in names])
        finite = torch.isfinite(values)
        if not bool(finite.all()):
            bad = [names[i] for i in range(len(names)) if not finite[i]]
            term = next((k for k in bad if k != 'loss'), bad[0])
            where = (f'; the last good checkpoint is {self.checkpoint_dir / LAST} '
                     f'(epoch {self.epoch})' if self.checkpoint_dir and self.epoch else '')
            raise NonFiniteLossError(
                f'non-finite loss term {term!r} (= {float(values[names.index(term)])}) from '
                f'{type(self.model).__name__}.{fn} at epoch {epoch}, batch index {batch_idx} '
                f'(0-based, of {num_batches}); non-finite terms: {bad}. Training stopped before '
                f'the optimiser step{where}. Try a lower lr or check the input features.')
        return dict(zip(names, values.tolist()))

    def _elapsed(self, t0: float) -> float:
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - t0

    # -----------------------------------------------------------------------------------------
    # checkpoints

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs (what ``last.pt`` / ``best.pt`` hold)."""
        return {
            'model': self.model.state_dict(),
            'optimizer': self.optimizer.state_dict(),
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

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state['model'])
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
        set_rng_state(state['rng'])
        # Killed between writing last.pt and best.pt: last.pt is the best state.
        if self.checkpoint_dir is not None and self.best_epoch == self.epoch:
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
        # last.pt first: if the process dies before best.pt is written, _restore repairs it.
        save_checkpoint(state, self.checkpoint_dir / LAST)
        if improved:
            save_checkpoint(state, self.checkpoint_dir / BEST)

    def _test_best(self) -> dict[str, float]:
        cfg = self.config
        if self.best_epoch == 0:
            raise RuntimeError('no validation evaluation took place, so there is no best epoch '
                               'to test (epochs must be >= 1)')
        if self.checkpoint_dir is not None:
            state = load_checkpoint(self.checkpoint_dir / BEST)
            if int(state['epoch']) != self.best_epoch:
                raise RuntimeError(f'{self.checkpoint_dir / BEST} holds epoch {state["epoch"]}, '
                                   f'but the best epoch is {self.best_epoch}')
            self.model.load_state_dict(state['model'])
        elif self._best_state is not None:
            self.model.load_state_dict(self._best_state)
        return evaluate(self.model, self.graph, 'test', cfg.ks,
                        exclude_val_at_test=cfg.exclude_val_at_test,
                        batch_size=cfg.eval_batch_size, progress=cfg.progress)


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
