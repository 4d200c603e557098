"""Whole runs, as the command line drives them: load data, resolve options, train, report.

Every function here is usable from Python; :mod:`mmssl_pyg.cli` only parses arguments.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from ..data.graph import RecGraph
from ..utils.io import (
    FolderLock,
    atomic_write,
    check_folder,
    check_output_file,
    clean_stale_tmp,
)
from .checkpoint import BEST, LAST, CheckpointError, load_checkpoint
from .config import (
    ConfigError,
    TrainConfig,
    check_cutoffs,
    check_option,
    model_option_types,
    resolve_options,
)
from .distributed import DistContext, init_distributed
from .evaluator import DEFAULT_KS, eval_mode, evaluate, exclusion_rows
from .tracking import check_wandb_mode, make_tracker
from .trainer import FitResult, Trainer, _amp_dtype, resolve_device, seed_everything

RUN_CONFIG = 'config.yaml'
METRICS = 'metrics.json'
DISTRIBUTED = 'distributed.json'
#: Trainer options that may differ when a run is resumed (they do not change its results).
RESUMABLE = ('epochs', 'patience', 'progress', 'device', 'num_threads', 'eval_batch_size')
#: Files of a run folder: a new run refuses a folder holding any of them (unless forced).
RUN_FILES = (LAST, BEST, METRICS, RUN_CONFIG, DISTRIBUTED)
OUTPUT_SUFFIXES = ('.csv', '.parquet')


class DataMismatchError(ValueError):
    """A run or checkpoint was made on other data than the data found now."""


# ---------------------------------------------------------------------------------------------
# data and models


def load_graph(dataset: str, root: str | None = None,
               modalities: list[str] | None = None, force_reload: bool = False) -> RecGraph:
    """:class:`RecGraph` of a bundled dataset name or a dataset folder."""
    return load_data(dataset, root, modalities, force_reload)[0]


def load_data(dataset: str, root: str | None = None, modalities: list[str] | None = None,
              force_reload: bool = False) -> tuple[RecGraph, dict[str, Any]]:
    """``(graph, identity)`` of a dataset name or folder.

    ``identity`` says which data this is, independently of the working directory:
    ``{'root': absolute folder, 'modalities': loaded modalities, 'digest': hash of the raw
    files' names and contents, 'files': {name: {'size', 'sha256'}}}``. Runs and checkpoints
    record it, and :func:`check_same_data` compares it with the data found later.
    """
    from ..data import load_dataset
    ds = load_dataset(dataset, root=root, modalities=modalities, force_reload=force_reload)
    data = ds[0]
    name = getattr(data, 'name', None) or _dataset_key(dataset)
    graph = RecGraph.from_hetero(data, name=name, modalities=modalities)
    identity = {'root': str(Path(ds.root).resolve()), 'modalities': list(ds.modalities),
                'digest': ds.data_digest,
                'files': {n: {'size': fp['size'], 'sha256': fp['sha256']}
                          for n, fp in ds.fingerprint.items()}}
    return graph, identity


def check_same_data(recorded: dict | None, found: dict, what: str) -> None:
    """Raise :class:`DataMismatchError` when ``found`` (a :func:`load_data` identity) is not the
    data ``recorded`` by a run or checkpoint (``what`` names it). Records of older versions,
    without a digest, are accepted with a warning."""
    if not recorded or not recorded.get('digest'):
        warnings.warn(f'{what} does not record which data it was trained on (written by an '
                      f'older version); the data in {found["root"]} is used unchecked',
                      UserWarning, stacklevel=3)
        return
    if recorded['digest'] == found['digest']:
        return
    old, new = recorded.get('files') or {}, found['files']
    changed = [n for n in sorted(set(old) | set(new)) if old.get(n) != new.get(n)]
    state = {n: 'missing' if n not in new else 'new' if n not in old else 'different content'
             for n in changed}
    detail = ', '.join(f'{n} ({why})' for n, why in state.items()) or 'different files'
    raise DataMismatchError(
        f'{what} was trained on the data in {recorded.get("root")} (digest '
        f'{recorded["digest"][:12]}), but the data loaded from {found["root"]} differs (digest '
        f'{found["digest"][:12]}; {detail}). Results on other data would be meaningless. Fix: '
        f'point --root at a folder holding the original raw files (or restore them), or '
        f'train a new run on this data')


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
              force: bool = False, force_reload: bool = False,
              tuned: bool = False) -> RunResult:
    """Train ``model`` on ``dataset`` with its preset, write ``metrics.json`` and return.

    Defaults: MMSSL on TikTok with the preset's settings. ``run_dir`` defaults to
    ``runs/<model>-<dataset>-<timestamp>``; it receives ``config.yaml`` (the resolved
    options and the identity of the data: absolute folder and content digest),
    ``best.pt`` / ``last.pt``, ``metrics.json`` and, unless ``wandb='disabled'``, the
    ``wandb/`` run folder (``wandb``: ``'disabled'``, ``'offline'`` (default) or
    ``'online'``). ``resume=True`` continues the run in ``run_dir`` with its saved options,
    data and wandb run; only the :data:`RESUMABLE` trainer options may change.

    Safety: every check (options, data, the run folder, a resumable ``last.pt``, a wandb
    login) runs before anything is written; a folder that holds a run (any of
    :data:`RUN_FILES`) is refused unless ``resume`` or ``force`` (which replaces those files);
    the folder is locked (``.lock``) while the run uses it and stale ``.tmp`` files are
    removed; ``force_reload`` re-processes the dataset.
    ``tuned=True`` applies the model's tuned preset for the dataset
    (``configs/tuned/<model>-<dataset>.yaml``, written by ``mmssl-pyg tune``) on top of the
    preset.

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
                          precision, force, force_reload, tuned)
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


def read_run_config(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The ``config.yaml`` of a run folder, checked to hold what ``--resume`` needs."""
    path = Path(run_dir) / RUN_CONFIG
    if not path.is_file():
        raise FileNotFoundError(f'cannot resume: {path} does not exist (is {run_dir} a run '
                                f'folder written by mmssl-pyg train?)')
    try:
        saved = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f'cannot resume: {path} is not valid YAML ({err}). Fix: restore it '
                          f'or start a new --run-dir') from None
    missing = [k for k in ('model', 'dataset', 'model_kwargs', 'train')
               if not isinstance(saved, dict) or k not in saved]
    if missing or not isinstance(saved['model_kwargs'], dict) or \
            not isinstance(saved['train'], dict):
        raise ConfigError(f'cannot resume: {path} lacks {", ".join(missing) or "valid sections"}'
                          f' (damaged or not written by mmssl-pyg train). Fix: restore it or '
                          f'start a new --run-dir')
    return saved


def _train_run(ctx, model, dataset, root, modalities, config_file, overrides, epochs, seed,
               device, run_dir, resume, wandb, progress, runs_root, precision, force,
               force_reload, tuned=False) -> RunResult:
    train_updates = {'epochs': epochs, 'seed': seed, 'device': device, 'progress': progress,
                     'precision': precision}
    saved = None
    if resume and force:
        raise ConfigError('--resume continues a run and --force replaces it: give one of them')
    if run_dir is not None:
        check_folder(run_dir, '--run-dir')
    if resume:
        if run_dir is None:
            raise ConfigError('--resume needs --run-dir: the folder of the run to continue')
        saved = _on_rank0(ctx, lambda: read_run_config(run_dir))
        for key, given in (('model', model), ('dataset', dataset)):
            if given is not None and _norm(given, key) != _norm(saved[key], key):
                raise ConfigError(f'cannot resume {run_dir} with --{key} {given}: the run was '
                                  f'started with {saved[key]}')
        model, dataset = saved['model'], saved['dataset']
        wandb = wandb or saved.get('wandb_mode')
        recorded = saved.get('data') or {}
        root = root if root is not None else (recorded.get('root') if not _is_path(dataset)
                                              else None) or saved.get('root')
        if _is_path(dataset) and recorded.get('root'):
            dataset = recorded['root']
        modalities = modalities if modalities is not None else \
            (saved.get('modalities') if saved.get('modalities') is not None
             else recorded.get('modalities'))
    model = model or 'mmssl'
    dataset = dataset or 'tiktok'
    wandb = wandb or 'offline'
    if ctx.is_main:
        check_wandb_mode(wandb)  # an online run without a login fails now, not after loading

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
    if not resume and run_dir is not None:
        _on_rank0(ctx, lambda: _check_new_run_dir(Path(run_dir), force))
    # rank 0 first: it may write the dataset's processed/ files the others then read
    if not ctx.is_main:
        ctx.barrier()
    try:
        graph, identity = load_data(dataset, root, modalities, force_reload and ctx.is_main)
    finally:
        if ctx.is_main:
            ctx.barrier()
    check_cutoffs(options.train.ks, graph.num_items, 'ks')
    if saved is not None:
        check_same_data(saved.get('data'), identity, f'run {run_dir}')

    lock: FolderLock | None = None

    def prepare_run_dir() -> Path:
        nonlocal lock
        path = run_dir
        if path is None:
            stamp = time.strftime('%Y%m%d-%H%M%S')
            path = Path(runs_root) / f'{model.lower()}-{_dataset_key(dataset)}-{stamp}'
        path = check_folder(path, '--run-dir')
        created = not path.exists()
        lock = FolderLock(path).acquire()
        try:
            clean_stale_tmp(path, all_tmp=True)  # ours while locked: left by a killed write
            if resume:
                _check_resume_checkpoint(path, saved)
            else:
                _check_new_run_dir(path, force)
                if force:
                    for name in RUN_FILES:
                        (path / name).unlink(missing_ok=True)
        except BaseException:
            lock.release()
            if created:
                with contextlib.suppress(OSError):
                    path.rmdir()
            lock = None
            raise
        return path

    run_dir = _on_rank0(ctx, prepare_run_dir)
    try:
        return _fit_in(ctx, run_dir, model, dataset, root, modalities, model_cls, options,
                       graph, identity, saved, wandb, resume)
    finally:
        if lock is not None:
            lock.release()


def _check_new_run_dir(path: Path, force: bool) -> None:
    """A new run may not write into a folder that holds another run's files."""
    existing = [n for n in RUN_FILES if (path / n).exists() or (path / n).is_symlink()]
    if existing and not force:
        raise ConfigError(f'{path} already holds a run ({", ".join(existing)}). Fix: continue '
                          f'it with --resume, replace it with --force, or choose another '
                          f'--run-dir')


def _check_resume_checkpoint(path: Path, saved: dict) -> None:
    """``--resume`` needs a readable ``last.pt`` of the same model and dataset."""
    last = path / LAST
    if not last.exists():
        raise FileNotFoundError(f'cannot resume: {last} does not exist (the run ended before '
                                f'its first epoch was saved). Fix: start it again with --force')
    state = load_checkpoint(last)
    meta = state.get('meta') if isinstance(state.get('meta'), dict) else {}
    if meta.get('model') != saved['model'].lower() or not all(
            k in state for k in ('model', 'optimizer', 'sampler', 'rng', 'epoch')):
        raise CheckpointError(f'cannot resume: {last} is not a checkpoint of this run (model '
                              f'{meta.get("model")!r}, the run has {saved["model"]!r}). Fix: '
                              f'restore the run\'s last.pt or start a new --run-dir')


def _fit_in(ctx, run_dir, model, dataset, root, modalities, model_cls, options, graph,
            identity, saved, wandb, resume) -> RunResult:
    model_kwargs = run_model_kwargs(model_cls, options)
    wandb_id = (saved or {}).get('wandb_id')
    # the data by absolute folder and content digest: evaluate from any folder finds it
    stored_dataset = identity['root'] if _is_path(dataset) else dataset
    record = {'model': model.lower(), 'dataset': stored_dataset,
              'root': None if root is None else str(Path(root).resolve()),
              'modalities': modalities, 'dataset_name': graph.name,
              'data': identity,
              'model_kwargs': _plain(model_kwargs), 'train': options.train.to_dict()}

    seed_everything(options.train.seed)
    net = build_model(model, graph, model_kwargs)
    tracker = make_tracker(wandb if ctx.is_main else 'disabled', dir=run_dir,
                           name=run_dir.name, run_id=wandb_id)
    if ctx.is_main:
        record['wandb_id'] = getattr(tracker, 'run_id', None)
        record['wandb_mode'] = wandb
        atomic_write(run_dir / RUN_CONFIG, yaml.safe_dump(record, sort_keys=False))
    meta = {k: record[k] for k in ('model', 'dataset', 'root', 'modalities', 'dataset_name',
                                   'data', 'model_kwargs')}
    try:
        trainer = Trainer(net, graph, options.train, tracker=tracker, checkpoint_dir=run_dir,
                          meta=meta, distributed=ctx)
        fit = trainer.fit(resume=resume)
    finally:
        tracker.finish()
    result = RunResult(fit, run_dir, model.lower(), dataset, model_kwargs, options.train)
    if ctx.is_main:
        atomic_write(run_dir / METRICS, json.dumps(result.to_dict(), indent=2,
                                                   default=_json_default))
        if ctx.enabled:
            info = {'world_size': ctx.world_size, 'backend': ctx.backend,
                    'device': str(trainer.device), 'epochs': trainer.dist_log}
            atomic_write(run_dir / DISTRIBUTED, json.dumps(info, indent=2))
    return result


def _is_path(dataset: str) -> bool:
    """Whether a dataset argument is a folder rather than a registry name."""
    from ..data.catalog import is_dataset_folder
    return is_dataset_folder(dataset)


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


# ---------------------------------------------------------------------------------------------
# checkpoints: evaluate and recommend


def resolve_checkpoint(checkpoint: str | os.PathLike) -> Path:
    """A checkpoint file, or a run folder (its ``best.pt``, else ``last.pt``)."""
    path = Path(checkpoint)
    if path.is_dir():
        for name in (BEST, LAST):
            if (path / name).exists():
                return path / name
        raise FileNotFoundError(f'run folder {str(path)!r} holds neither {BEST} nor {LAST}. '
                                f'Fix: give a run folder written by mmssl-pyg train, or a .pt '
                                f'file')
    return path


def load_run_checkpoint(checkpoint: str | os.PathLike, device: str = 'auto',
                        root: str | None = None, force_reload: bool = False):
    """Rebuild ``(model, graph, state)`` from a ``best.pt`` / ``last.pt`` (or a run folder,
    which means its ``best.pt``) written by :func:`train_run`.

    The data is found by the absolute folder the checkpoint records (``root`` overrides it)
    and must have the recorded content digest: other data raises
    :class:`DataMismatchError`, whatever the working directory."""
    path = resolve_checkpoint(checkpoint)
    state = load_checkpoint(path)
    meta = state.get('meta') if isinstance(state.get('meta'), dict) else {}
    if 'model' not in meta or 'dataset' not in meta or 'model' not in state:
        raise CheckpointError(f'checkpoint {str(path)!r} has no model/dataset record (meta); it '
                              f'was not written by mmssl-pyg train. Load it with Trainer in '
                              f'Python.')
    recorded = meta.get('data') if isinstance(meta.get('data'), dict) else {}
    dataset = meta['dataset']
    if root is None:
        root = recorded.get('root') or meta.get('root')
        if recorded.get('root') and not Path(recorded['root']).is_dir():
            raise FileNotFoundError(
                f'checkpoint {str(path)!r} was trained on the data in {recorded["root"]}, which '
                f'no longer exists. Fix: pass --root FOLDER holding the same raw files')
    if _is_path(dataset):
        dataset, root = root or dataset, None  # a folder dataset: the folder is the dataset
    modalities = meta.get('modalities')
    if modalities is None:
        modalities = recorded.get('modalities')
    graph, identity = load_data(dataset, root, modalities, force_reload)
    check_same_data(recorded, identity, f'checkpoint {str(path)!r}')
    model = build_model(meta['model'], graph, dict(meta.get('model_kwargs') or {}))
    try:
        model.load_state_dict(state['model'])
    except RuntimeError as err:
        first = str(err).strip().splitlines()[-1].strip()
        raise CheckpointError(f'checkpoint {str(path)!r} does not fit the model built from its '
                              f'record and the data in {identity["root"]} ({first}). Fix: '
                              f'evaluate it on the data it was trained on') from None
    dev = resolve_device(device)
    return model.to(dev).eval(), graph.to(dev), state


def evaluate_checkpoint(checkpoint: str | os.PathLike, split: str = 'test',
                        ks=DEFAULT_KS, exclude_val_at_test: bool = False,
                        device: str = 'auto', root: str | None = None,
                        batch_size: int = 1024, progress: bool = False,
                        force_reload: bool = False) -> dict[str, Any]:
    """Metrics of a checkpoint on ``split``: ``{'epoch', 'split', 'metrics'}``."""
    if split not in ('val', 'test'):
        raise ValueError(f"split must be 'val' or 'test', got {split!r}")
    ks = check_option('train', 'ks', ks, source='--ks')
    model, graph, state = load_run_checkpoint(checkpoint, device, root, force_reload)
    check_cutoffs(ks, graph.num_items, '--ks')
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
    if exclude not in ('train', 'all'):
        raise ValueError(f"exclude must be 'train' or 'all', got {exclude!r}")
    k = check_option('cli', 'k', k, source='', label='-k')
    check_cutoffs([k], graph.num_items, '-k')
    if users is None:
        users = torch.arange(graph.num_users)
    users = torch.as_tensor(users, dtype=torch.long).view(-1).cpu()
    if users.numel() == 0:
        raise ValueError('no user ids given. Fix: --users 0,1,2 (comma-separated ids), or '
                         '--output FILE for every user')
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
    with eval_mode(model):
        items, scores = model.recommend(users, k, rowptr, col, block_size=batch_size,
                                        return_scores=True)
    return users, items.cpu(), scores.cpu()


def write_recommendations(path: str | os.PathLike, users: torch.Tensor, items: torch.Tensor,
                          scores: torch.Tensor, force: bool = False) -> Path:
    """Write long-format ``user, rank, item, score`` rows (rank from 1) to ``.csv`` or
    ``.parquet`` (Parquet needs pyarrow), atomically: an existing file is replaced only with
    ``force`` and only by a complete new file (see :func:`check_output_path`)."""
    path = Path(path)
    suffix = check_output_path(path, force)
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
        atomic_write(path, lambda f: pq.write_table(table, f))
    else:
        def write_csv(f):
            writer = csv.writer(f)
            writer.writerow(['user', 'rank', 'item', 'score'])
            writer.writerows(zip(u.tolist(), rank.tolist(), it.tolist(),
                                 (f'{s:.6g}' for s in sc.tolist())))
        atomic_write(path, write_csv, binary=False)
    return path


def check_output_path(path: str | os.PathLike, force: bool = False) -> str:
    """The suffix of a recommendation file (``.csv`` / ``.parquet``), checked before any work:
    an unknown suffix, a folder, a symbolic link, an existing file without ``force``, an
    unwritable place, or Parquet without pyarrow fail with the fix."""
    path = check_output_file(path, force, OUTPUT_SUFFIXES)
    suffix = path.suffix.lower()
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
