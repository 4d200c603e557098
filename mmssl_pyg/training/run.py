"""Whole runs, as the command line drives them: load data, resolve options, train, report.

Every function here is usable from Python; :mod:`mmssl_pyg.cli` only parses arguments.
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..data.graph import RecGraph
from ..utils.io import (
    LOCK_NAME,
    FolderLock,
    atomic_write,
    check_folder,
    clean_stale_tmp,
    remove_generated_modules_at_exit,
)
from .checkpoint import CheckpointError, load_checkpoint
from .config import (
    ConfigError,
    TrainConfig,
    check_cutoffs,
    check_option,
    model_option_types,
    resolve_options,
)
from .distributed import DistContext, init_distributed
from .evaluator import DEFAULT_KS, evaluate
from .recommend import (  # noqa: F401 - re-exported: the historical import path
    OUTPUT_SUFFIXES,
    check_output_path,
    format_metrics,
    format_recommendations,
    recommend,
    write_recommendations,
)
from .run_folder import (  # noqa: F401 - re-exported: the historical import path
    DISTRIBUTED,
    METRICS,
    RESUMABLE,
    RUN_CONFIG,
    RUN_FILES,
    DataMismatchError,
    _check_new_run_dir,
    _check_resumable,
    _check_resume_checkpoint,
    _dataset_key,
    _is_path,
    _json_default,
    _norm,
    _plain,
    check_same_data,
    read_run_config,
    resolve_checkpoint,
)
from .tracking import check_wandb_mode, make_tracker
from .trainer import FitResult, Trainer, _amp_dtype, resolve_device, seed_everything

#: Model options sized by the mini-batch: a run sets them to the trainer's batch size unless
#: they are given.
BATCH_SIZED_OPTIONS = ('batch_size', 'critic_batch_size')

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


def check_root_option(dataset: str | None, root: str | None) -> None:
    """``--root`` names the folder of a dataset *name*; with a dataset folder it would be
    ignored, so it is refused."""
    if root is not None and dataset is not None and _is_path(dataset):
        raise ConfigError(f'--root {root!r} is given, but --dataset {dataset!r} is a folder: the '
                          f'folder is the dataset and --root would be ignored. Fix: drop --root, '
                          f'or pass --dataset NAME --root FOLDER')


def build_model(model_name: str, graph: RecGraph, model_kwargs: dict[str, Any]):
    from ..models import get_model_class
    return get_model_class(model_name)(graph, **model_kwargs)


def full_model_kwargs(model_cls, model_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The class defaults, updated with ``model_kwargs`` (what a run records)."""
    defaults = model_option_types(model_cls) or {}
    out = {k: v for k, v in defaults.items() if v is not None}
    out.update(model_kwargs)
    return out


def batch_sized_kwargs(model_cls, options) -> dict[str, Any]:
    """The resolved model options with each model option sized by the mini-batch (one of
    :data:`BATCH_SIZED_OPTIONS`, e.g. MMSSL's critic memory check) set to the trainer's batch
    size unless given."""
    model_kwargs = dict(options.model_kwargs)
    takes = model_option_types(model_cls)
    for name in BATCH_SIZED_OPTIONS:
        if takes is not None and name in takes and name not in model_kwargs:
            model_kwargs[name] = options.train.batch_size
    return model_kwargs


def run_model_kwargs(model_cls, options) -> dict[str, Any]:
    """The keyword arguments a run builds the model with: :func:`batch_sized_kwargs`, then
    the class defaults for the rest (see :func:`full_model_kwargs`)."""
    return full_model_kwargs(model_cls, batch_sized_kwargs(model_cls, options))


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

    Safety: every check (options, data, the model's and the trainer's constructors, the run
    folder, a resumable ``last.pt``, a wandb login) runs before anything is written or deleted;
    a folder that holds a run (any of :data:`RUN_FILES`) is refused unless ``resume`` or
    ``force`` (which replaces those files once the new model and trainer are built); a folder
    the run created is removed again when the run fails before writing into it;
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
        remove_generated_modules_at_exit()  # PyG's rendered propagate modules (see there)


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
               device, run_dir, resume, wandb, progress, runs_root, precision, force,
               force_reload, tuned=False) -> RunResult:
    train_updates = {'epochs': epochs, 'seed': seed, 'device': device, 'progress': progress,
                     'precision': precision}
    saved = None
    if resume and force:
        raise ConfigError('--resume continues a run and --force replaces it: give one of them')
    if run_dir is not None:
        check_folder(run_dir, '--run-dir')
    check_root_option(dataset, root)
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
    # The model and the trainer are built before the run folder is touched: their own checks
    # (an ablation name, missing features, the critic memory check, ...) refuse the command
    # while an old run (replaced by --force) and the folder are still as they were.
    model_kwargs = run_model_kwargs(model_cls, options)
    seed_everything(options.train.seed)
    net = model_cls(graph, **model_kwargs)
    trainer = Trainer(net, graph, options.train, distributed=ctx)

    lock: FolderLock | None = None
    created_dir: list[Path] = []

    def prepare_run_dir() -> Path:
        nonlocal lock
        path = run_dir
        if path is None:
            stamp = time.strftime('%Y%m%d-%H%M%S')
            path = Path(runs_root) / f'{model.lower()}-{_dataset_key(dataset)}-{stamp}'
        path = check_folder(path, '--run-dir')
        created = not path.exists()
        lock = FolderLock(path).acquire()
        if created:
            created_dir.append(path)
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
        return _fit_in(ctx, run_dir, model, dataset, root, modalities, model_kwargs, options,
                       graph, identity, saved, wandb, resume, trainer)
    except BaseException:
        if lock is not None and created_dir:
            _remove_if_empty(created_dir[0], keep=LOCK_NAME)  # a refused run leaves no folder
        raise
    finally:
        if lock is not None:
            lock.release()
        if created_dir:
            with contextlib.suppress(OSError):
                created_dir[0].rmdir()  # only when nothing (not even a .lock) is left


def _remove_if_empty(folder: Path, keep: str) -> None:
    """Remove the stale ``.tmp`` files of a folder this process created, so that
    ``rmdir`` after the lock's release can remove a folder in which nothing was written."""
    with contextlib.suppress(OSError):
        if all(p.name == keep or (p.name.startswith('.') and p.name.endswith('.tmp'))
               for p in folder.iterdir()):
            clean_stale_tmp(folder, all_tmp=True)


def _fit_in(ctx, run_dir, model, dataset, root, modalities, model_kwargs, options, graph,
            identity, saved, wandb, resume, trainer) -> RunResult:
    wandb_id = (saved or {}).get('wandb_id')
    # the data by absolute folder and content digest: evaluate from any folder finds it
    stored_dataset = identity['root'] if _is_path(dataset) else dataset
    record = {'model': model.lower(), 'dataset': stored_dataset,
              'root': None if root is None else str(Path(root).resolve()),
              'modalities': modalities, 'dataset_name': graph.name,
              'data': identity,
              'model_kwargs': _plain(model_kwargs), 'train': options.train.to_dict()}

    tracker = make_tracker(wandb if ctx.is_main else 'disabled', dir=run_dir,
                           name=run_dir.name, run_id=wandb_id)
    if ctx.is_main:
        record['wandb_id'] = getattr(tracker, 'run_id', None)
        record['wandb_mode'] = wandb
        atomic_write(run_dir / RUN_CONFIG, yaml.safe_dump(record, sort_keys=False))
    meta = {k: record[k] for k in ('model', 'dataset', 'root', 'modalities', 'dataset_name',
                                   'data', 'model_kwargs')}
    try:
        if ctx.is_main:
            trainer.tracker = tracker
        trainer.checkpoint_dir, trainer.meta = run_dir, meta
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


# ---------------------------------------------------------------------------------------------
# checkpoints


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
