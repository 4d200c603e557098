"""Whole runs, as the command line drives them: load data, resolve options, train, report.

Every function here is usable from Python; :mod:`mmssl_pyg.cli` only parses arguments.
"""
from __future__ import annotations

import csv
import io
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from ..data.graph import RecGraph
from .checkpoint import BEST, LAST, load_checkpoint
from .config import ConfigError, TrainConfig, model_option_types, resolve_options
from .distributed import DistContext, init_distributed
from .evaluator import DEFAULT_KS, evaluate, exclusion_rows, inference_embeddings
from .tracking import make_tracker
from .trainer import FitResult, Trainer, _amp_dtype, resolve_device, seed_everything

RUN_CONFIG = 'config.yaml'
METRICS = 'metrics.json'
DISTRIBUTED = 'distributed.json'
#: Trainer options that may differ when a run is resumed (they do not change its results).
RESUMABLE = ('epochs', 'patience', 'progress', 'device', 'num_threads', 'eval_batch_size')


# ---------------------------------------------------------------------------------------------
# data and models


def load_graph(dataset: str, root: str | None = None,
               modalities: list[str] | None = None) -> RecGraph:
    """:class:`RecGraph` of a bundled dataset name or a dataset folder."""
    from ..data import load_dataset
    ds = load_dataset(dataset, root=root, modalities=modalities)
    data = ds[0]
    name = getattr(data, 'name', None) or _dataset_key(dataset)
    return RecGraph.from_hetero(data, name=name, modalities=modalities)


def _dataset_key(dataset: str) -> str:
    """Preset key and run-name part of a dataset argument: a registry name (lower case,
    ``_`` -> ``-``) or a folder's name."""
    path = Path(dataset)
    if len(path.parts) > 1 or path.is_dir():
        return path.resolve().name
    return dataset.lower().replace('_', '-')


def build_model(model_name: str, graph: RecGraph, model_kwargs: dict[str, Any]):
    from ..models import get_model_class
    return get_model_class(model_name)(graph, **model_kwargs)


def full_model_kwargs(model_cls, model_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The class defaults, updated with ``model_kwargs`` (what a run records)."""
    defaults = model_option_types(model_cls) or {}
    out = {k: v for k, v in defaults.items() if v is not None}
    out.update(model_kwargs)
    return out


def run_model_kwargs(model_cls, options) -> dict[str, Any]:
    """The keyword arguments a run builds the model with: the resolved options, a model
    option sized by the mini-batch (``batch_size`` / ``critic_batch_size``, e.g. MMSSL's
    critic memory check) set to the trainer's batch size unless given, then the class
    defaults for the rest (see :func:`full_model_kwargs`)."""
    model_kwargs = dict(options.model_kwargs)
    takes = model_option_types(model_cls)
    for name in ('batch_size', 'critic_batch_size'):
        if takes is not None and name in takes and name not in model_kwargs:
            model_kwargs[name] = options.train.batch_size
    return full_model_kwargs(model_cls, model_kwargs)


# ---------------------------------------------------------------------------------------------
# training


@dataclass
class RunResult:
    fit: FitResult
    run_dir: Path
    model: str
    dataset: str
    model_kwargs: dict[str, Any]
    train: TrainConfig

    def to_dict(self) -> dict[str, Any]:
        return {'model': self.model, 'dataset': self.dataset, 'run_dir': str(self.run_dir),
                'best_epoch': self.fit.best_epoch, 'val': self.fit.val, 'test': self.fit.test,
                'stopped_early': self.fit.stopped_early,
                'resumed_from_epoch': self.fit.resumed_from_epoch,
                'epochs_run': len(self.fit.history), 'model_kwargs': _plain(self.model_kwargs),
                'train': self.train.to_dict(), 'history': self.fit.history}


def train_run(model: str | None = None, dataset: str | None = None, root: str | None = None,
              modalities: list[str] | None = None, config_file: str | None = None,
              overrides: list[str] | None = None, epochs: int | None = None,
              seed: int | None = None, device: str | None = None,
              run_dir: str | os.PathLike | None = None, resume: bool = False,
              wandb: str | None = None, progress: bool | None = None,
              runs_root: str | os.PathLike = 'runs', precision: str | None = None,
              tuned: bool = False) -> RunResult:
    """Train ``model`` on ``dataset`` with its preset, write ``metrics.json`` and return.

    Defaults: MMSSL on TikTok with the preset's settings. ``run_dir`` defaults to
    ``runs/<model>-<dataset>-<timestamp>``; it receives ``config.yaml`` (the resolved
    options), ``best.pt`` / ``last.pt``, ``metrics.json`` and, unless ``wandb='disabled'``,
    the ``wandb/`` run folder (``wandb``: ``'disabled'``, ``'offline'`` (default) or
    ``'online'``). ``resume=True`` continues the run in ``run_dir`` with its saved options and
    wandb run; only the :data:`RESUMABLE` trainer options may change. ``tuned=True`` applies
    the model's tuned preset for the dataset (``configs/tuned/<model>-<dataset>.yaml``, written
    by ``mmssl-pyg tune``) on top of the preset.

    Under ``torchrun`` (``WORLD_SIZE > 1``) the process group is started here
    (:func:`~mmssl_pyg.training.distributed.init_distributed`: NCCL and ``cuda:LOCAL_RANK``
    for a GPU ``device`` (or ``auto`` with CUDA), gloo on CPUs) and ended on return; every
    process returns the same result, rank 0 alone writes the run folder (plus
    ``distributed.json``: every rank's state digests per epoch) and logs to wandb.
    """
    ctx, _ = init_distributed(device or 'auto')
    try:
        return _train_run(ctx, model, dataset, root, modalities, config_file, overrides,
                          epochs, seed, device, run_dir, resume, wandb, progress, runs_root,
                          precision, tuned)
    finally:
        ctx.shutdown()


def _on_rank0(ctx: DistContext, fn):
    """``fn()`` on rank 0, its value (or its exception, re-raised) on every process."""
    value, error = None, None
    if ctx.is_main:
        try:
            value = fn()
        except Exception as err:  # noqa: BLE001 - re-raised on every process below
            error = err
    value, error = ctx.broadcast_object((value, error)) if ctx.enabled else (value, error)
    if error is not None:
        raise error
    return value


def _train_run(ctx, model, dataset, root, modalities, config_file, overrides, epochs, seed,
               device, run_dir, resume, wandb, progress, runs_root, precision,
               tuned=False) -> RunResult:
    train_updates = {'epochs': epochs, 'seed': seed, 'device': device, 'progress': progress,
                     'precision': precision}
    saved = None
    if resume:
        if run_dir is None:
            raise ConfigError('--resume needs --run-dir: the folder of the run to continue')

        def read_saved():
            saved_path = Path(run_dir) / RUN_CONFIG
            if not saved_path.is_file():
                raise FileNotFoundError(f'cannot resume: {saved_path} does not exist (is '
                                        f'{run_dir} a run folder written by mmssl-pyg train?)')
            return yaml.safe_load(saved_path.read_text())

        saved = _on_rank0(ctx, read_saved)
        for key, given in (('model', model), ('dataset', dataset)):
            if given is not None and _norm(given, key) != _norm(saved[key], key):
                raise ConfigError(f'cannot resume {run_dir} with --{key} {given}: the run was '
                                  f'started with {saved[key]}')
        model, dataset = saved['model'], saved['dataset']
        wandb = wandb or saved.get('wandb_mode')
        root = root if root is not None else saved.get('root')
        modalities = modalities if modalities is not None else saved.get('modalities')
    model = model or 'mmssl'
    dataset = dataset or 'tiktok'
    wandb = wandb or 'offline'

    from ..models import get_model_class
    model_cls = get_model_class(model)
    # Options are checked before the (possibly slow) data loading, so typos fail at once.
    options = resolve_options(
        model_cls, _dataset_key(dataset), model_name=model, config_file=config_file,
        overrides=overrides, train_updates=train_updates,
        base=None if saved is None else (saved['model_kwargs'], saved['train']), tuned=tuned)
    if saved is not None:
        _check_resumable(saved, options, run_dir)
    _amp_dtype(options.train.precision, resolve_device(options.train.device))  # fp16 on CPU
    # rank 0 first: it may write the dataset's processed/ files the others then read
    if not ctx.is_main:
        ctx.barrier()
    graph = load_graph(dataset, root, modalities)
    if ctx.is_main:
        ctx.barrier()

    def prepare_run_dir() -> Path:
        path = run_dir
        if path is None:
            stamp = time.strftime('%Y%m%d-%H%M%S')
            path = Path(runs_root) / f'{model.lower()}-{_dataset_key(dataset)}-{stamp}'
        path = Path(path)
        if not resume and (path / LAST).exists():
            raise ConfigError(f'{path} already holds a run ({LAST}); continue it with --resume '
                              f'or choose another --run-dir')
        path.mkdir(parents=True, exist_ok=True)
        return path

    run_dir = _on_rank0(ctx, prepare_run_dir)
    model_kwargs = run_model_kwargs(model_cls, options)
    wandb_id = (saved or {}).get('wandb_id')
    record = {'model': model.lower(), 'dataset': dataset, 'root': root,
              'modalities': modalities, 'dataset_name': graph.name,
              'model_kwargs': _plain(model_kwargs), 'train': options.train.to_dict()}

    seed_everything(options.train.seed)
    net = build_model(model, graph, model_kwargs)
    tracker = make_tracker(wandb if ctx.is_main else 'disabled', dir=run_dir,
                           name=run_dir.name, run_id=wandb_id)
    if ctx.is_main:
        record['wandb_id'] = getattr(tracker, 'run_id', None)
        record['wandb_mode'] = wandb
        _write_text(run_dir / RUN_CONFIG, yaml.safe_dump(record, sort_keys=False))
    meta = {k: record[k] for k in ('model', 'dataset', 'root', 'modalities', 'dataset_name',
                                   'model_kwargs')}
    try:
        trainer = Trainer(net, graph, options.train, tracker=tracker, checkpoint_dir=run_dir,
                          meta=meta, distributed=ctx)
        fit = trainer.fit(resume=resume)
    finally:
        tracker.finish()
    result = RunResult(fit, run_dir, model.lower(), dataset, model_kwargs, options.train)
    if ctx.is_main:
        _write_text(run_dir / METRICS, json.dumps(result.to_dict(), indent=2,
                                                  default=_json_default))
        if ctx.enabled:
            info = {'world_size': ctx.world_size, 'backend': ctx.backend,
                    'device': str(trainer.device), 'epochs': trainer.dist_log}
            _write_text(run_dir / DISTRIBUTED, json.dumps(info, indent=2))
    return result


def _norm(value: str, key: str) -> str:
    return value.lower() if key == 'model' else _dataset_key(value)


def _check_resumable(saved: dict, options, run_dir) -> None:
    diffs = []
    for k, v in options.model_kwargs.items():
        if k in saved['model_kwargs'] and _plain(v) != _plain(saved['model_kwargs'][k]):
            diffs.append(f'model.{k}: run has {saved["model_kwargs"][k]!r}, asked {v!r}')
    now = options.train.to_dict()
    for k, v in saved['train'].items():
        if k not in RESUMABLE and _plain(now.get(k)) != _plain(v):
            diffs.append(f'train.{k}: run has {v!r}, asked {now.get(k)!r}')
    if diffs:
        raise ConfigError(f'cannot resume {run_dir} with different settings ({"; ".join(diffs)}); '
                          f'only {", ".join(RESUMABLE)} may change. Start a new --run-dir instead.')


def _plain(x):
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, torch.Tensor):
        return x.tolist()
    return x


def _json_default(x):
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, torch.Tensor):
        return x.tolist()
    return repr(x)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f'.{path.name}.tmp')
    tmp.write_text(text)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# checkpoints: evaluate and recommend


def load_run_checkpoint(checkpoint: str | os.PathLike, device: str = 'auto',
                        root: str | None = None):
    """Rebuild ``(model, graph, state)`` from a ``best.pt`` / ``last.pt`` (or a run folder,
    which means its ``best.pt``) written by :func:`train_run`."""
    path = Path(checkpoint)
    if path.is_dir():
        path = path / BEST if (path / BEST).is_file() else path / LAST
    state = load_checkpoint(path)
    meta = state.get('meta') or {}
    if 'model' not in meta or 'dataset' not in meta:
        raise ValueError(f'checkpoint {str(path)!r} has no model/dataset record (meta); it was '
                         f'not written by mmssl-pyg train. Load it with Trainer in Python.')
    graph = load_graph(meta['dataset'], root if root is not None else meta.get('root'),
                       meta.get('modalities'))
    model = build_model(meta['model'], graph, dict(meta.get('model_kwargs') or {}))
    model.load_state_dict(state['model'])
    dev = resolve_device(device)
    return model.to(dev).eval(), graph.to(dev), state


def evaluate_checkpoint(checkpoint: str | os.PathLike, split: str = 'test',
                        ks=DEFAULT_KS, exclude_val_at_test: bool = False,
                        device: str = 'auto', root: str | None = None,
                        batch_size: int = 1024, progress: bool = False) -> dict[str, Any]:
    """Metrics of a checkpoint on ``split``: ``{'epoch', 'split', 'metrics'}``."""
    model, graph, state = load_run_checkpoint(checkpoint, device, root)
    metrics = evaluate(model, graph, split, ks, exclude_val_at_test=exclude_val_at_test,
                       batch_size=batch_size, progress=progress)
    return {'epoch': int(state.get('epoch', 0)), 'split': split, 'metrics': metrics}


@torch.no_grad()
def recommend(model, graph: RecGraph, users: torch.Tensor | None = None, k: int = 20,
              exclude: str = 'train', batch_size: int = 1024,
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-``k`` unseen items per user (``users`` defaults to all).

    Args:
        exclude: ``'train'`` ranks every item the user has not interacted with in training;
            ``'all'`` also drops the validation and test items.

    Returns:
        ``(users [U], items [U, k], scores [U, k])``, best first, on the CPU.
    """
    from ..nn.topk import blockwise_topk
    if exclude not in ('train', 'all'):
        raise ValueError(f"exclude must be 'train' or 'all', got {exclude!r}")
    if users is None:
        users = torch.arange(graph.num_users)
    users = torch.as_tensor(users, dtype=torch.long).view(-1).cpu()
    bad = users[(users < 0) | (users >= graph.num_users)]
    if bad.numel():
        raise ValueError(f'user ids {bad.tolist()[:10]} are out of range: dataset '
                         f'{graph.name!r} has users 0..{graph.num_users - 1}')
    if exclude == 'train':
        rowptr, col = exclusion_rows(graph)
    else:
        from ..data.graph import csr_rows
        ei = torch.cat([graph.train_edge_index, graph.val_edge_index.to(graph.train_edge_index),
                        graph.test_edge_index.to(graph.train_edge_index)], dim=1)
        rowptr, col = csr_rows(ei.long(), graph.num_users)
    user_emb, item_emb = inference_embeddings(model)
    dev = user_emb.device
    ids = users.to(dev)
    scores, items = blockwise_topk(user_emb[ids], item_emb, k, block_size=batch_size,
                                   exclude_rowptr=rowptr.to(dev), exclude_col=col.to(dev),
                                   query_ids=ids)
    return users, items.cpu(), scores.cpu()


def write_recommendations(path: str | os.PathLike, users: torch.Tensor, items: torch.Tensor,
                          scores: torch.Tensor) -> Path:
    """Write long-format ``user, rank, item, score`` rows (rank from 1) to ``.csv`` or
    ``.parquet`` (Parquet needs pyarrow)."""
    path = Path(path)
    suffix = check_output_path(path)
    k = items.size(1)
    valid = torch.isfinite(scores)  # fewer than k unseen items: the tail is excluded items
    u = users.view(-1, 1).expand(-1, k)[valid]
    rank = torch.arange(1, k + 1).view(1, -1).expand(users.numel(), -1)[valid]
    it, sc = items[valid], scores[valid]
    if suffix == '.parquet':
        import pyarrow as pa
        import pyarrow.parquet as pq
        table = pa.table({'user': u.numpy(), 'rank': rank.numpy(), 'item': it.numpy(),
                          'score': sc.float().numpy()})
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
    elif suffix == '.csv':
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, 'w', newline='') as f:
            writer = csv.writer(f)
            writer.writerow(['user', 'rank', 'item', 'score'])
            writer.writerows(zip(u.tolist(), rank.tolist(), it.tolist(),
                                 (f'{s:.6g}' for s in sc.tolist())))
    return path


def check_output_path(path: str | os.PathLike) -> str:
    """The suffix of a recommendation file (``.csv`` / ``.parquet``), checked before any work:
    an unknown suffix or Parquet without pyarrow fails with the fix."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in ('.csv', '.parquet'):
        raise ValueError(f'output file {str(path)!r}: unsupported type {suffix or "(none)"!r}; '
                         f'use .csv or .parquet')
    if suffix == '.parquet':
        try:
            import pyarrow  # noqa: F401
            import pyarrow.parquet  # noqa: F401
        except ImportError:
            raise ImportError(f'writing {path.name}: Parquet output needs pyarrow, which is not '
                              f'installed. Run `pip install pyarrow` (or `pip install '
                              f'mmssl-pyg[parquet]`), or write a .csv file instead.') from None
    return suffix


def format_recommendations(users: torch.Tensor, items: torch.Tensor,
                           scores: torch.Tensor) -> str:
    """Tab-separated ``user<TAB>item item ...`` lines (best first), with a header."""
    buf = io.StringIO()
    buf.write('user\titems\n')
    for u, row, s in zip(users.tolist(), items.tolist(), scores.tolist()):
        buf.write(f'{u}\t{" ".join(str(i) for i, v in zip(row, s) if v != float("-inf"))}\n')
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# reporting


def format_metrics(rows: dict[str, dict[str, float]], ks=DEFAULT_KS) -> str:
    """A plain-text table: one row per (split, metric), one column per K."""
    ks = sorted(ks)
    names = ('recall', 'precision', 'ndcg', 'hit')
    header = f'{"":<16}' + ''.join(f'{"@" + str(k):>10}' for k in ks)
    lines = [header]
    for split, metrics in rows.items():
        for name in names:
            if not any(f'{name}@{k}' in metrics for k in ks):
                continue
            cells = ''.join(f'{metrics[f"{name}@{k}"]:>10.4f}' if f'{name}@{k}' in metrics
                            else f'{"-":>10}' for k in ks)
            lines.append(f'{split + " " + name:<16}{cells}')
    return '\n'.join(lines)
