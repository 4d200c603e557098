"""Whole runs: one assembly (:func:`prepare_run`) for every entry point, training, loading.

A :class:`RunRequest` says what a run is asked for (the ``mmssl-pyg train`` flags, one field
each). :func:`prepare_run` turns it into a :class:`Run` in one fixed order: resolve the
options (preset, ``--config``, ``key=value``, flags), load the data with its identity, seed,
build the model; the run then starts its tracker. ``mmssl-pyg train`` (:func:`train_run`), the
tuner's trials (:func:`~mmssl_pyg.training.tune.tune`), checkpoint loading
(:func:`load_run_checkpoint`, used by ``evaluate``, ``recommend`` and ``compare``) and the
benchmark runner (``benchmarks._common.run_unit``) all take this path.

Every function here is usable from Python; :mod:`mmssl_pyg.cli` only parses arguments.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
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
)
from .checkpoint import CheckpointError, load_checkpoint
from .device import _amp_dtype, resolve_device, seed_everything
from .distributed import DistContext, init_distributed
from .evaluator import DEFAULT_KS, evaluate
from .options import ConfigError, TrainConfig, check_cutoffs, check_option, model_option_types
from .presets import RunOptions, resolve_options
from .run_folder import (
    DISTRIBUTED,
    METRICS,
    RUN_CONFIG,
    RUN_FILES,
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
from .tracking import Tracker, check_wandb_mode, make_tracker
from .trainer import FitResult, Trainer

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


def from_preset(model: str | type, graph: RecGraph, dataset: str | os.PathLike | None = None,
                **options: Any):
    """The model ``mmssl-pyg train --model <model> --dataset <dataset>`` builds, in Python: the
    options of ``configs/<model>.yaml`` (its ``default`` block, the dataset layer, then the
    dataset's block, resolved as the command line does) over the constructor defaults, then
    ``options``. Model options sized by the mini-batch (MMSSL's ``critic_batch_size``, BM3's
    ``batch_size``) get the preset's trainer batch size, as in a run. ``Model(graph)`` instead
    gives the constructor's defaults (for MMSSL the paper's values, ``'mmssl-paper'``'s).

    Args:
        model: a model name of :data:`mmssl_pyg.models.MODELS` (``'mmssl'``, ``'mmssl-paper'``,
            ``'lightgcn'``, ...) or a model class (its preset is its lower-cased name).
        graph: the training graph.
        dataset: the dataset name (or folder) whose preset block applies; default
            ``graph.name``. A dataset without a block gets the preset's ``default``.
        **options: model options set last, like ``model.<key>=<value>`` overrides.
    """
    from ..models import get_model_class
    name = model if isinstance(model, str) else model.__name__.lower()
    model_cls = get_model_class(name)
    resolved = resolve_options(
        model_cls, _dataset_key(str(dataset if dataset is not None else graph.name)),
        model_name=name, overrides=[(f'model.{k}', v) for k, v in options.items()])
    return model_cls(graph, **run_model_kwargs(model_cls, resolved))


# ---------------------------------------------------------------------------------------------
# the request and its assembly


#: Trainer options a request sets last (the ``--epochs``, ``--seed``, ... flags).
TRAIN_FLAGS = ('epochs', 'seed', 'device', 'precision', 'progress')


@dataclass
class RunRequest:
    """What a run is asked for: the ``mmssl-pyg train`` flags, one field each.

    ``model`` / ``dataset`` default to ``mmssl`` / ``tiktok``; ``overrides`` are ``key=value``
    strings or ``(key, value)`` pairs; ``epochs`` ... ``progress`` (:data:`TRAIN_FLAGS`) are set
    after every other source. ``config.yaml`` of a run folder stores the request (its
    :data:`RECORDED` fields, with the data's absolute folder), so ``--resume`` is
    :meth:`resumed`: the saved request with the new one's fields on top.
    """
    model: str | None = None
    dataset: str | None = None
    root: str | None = None
    modalities: list[str] | None = None
    config_file: str | os.PathLike | None = None
    overrides: list = field(default_factory=list)
    tuned: bool = False
    epochs: int | None = None
    seed: int | None = None
    device: str | None = None
    precision: str | None = None
    progress: bool | None = None
    wandb: str | None = None
    run_dir: str | os.PathLike | None = None
    runs_root: str | os.PathLike = 'runs'
    resume: bool = False
    force: bool = False
    force_reload: bool = False

    #: Fields ``config.yaml`` records: what the run was asked (the others say how to run it
    #: this time: folder, resume, force, reload, progress bars).
    RECORDED = ('model', 'dataset', 'root', 'modalities', 'config_file', 'overrides', 'tuned',
                'epochs', 'seed', 'device', 'precision', 'wandb')

    def __post_init__(self):
        self.overrides = list(self.overrides or [])

    @property
    def model_name(self) -> str:
        return (self.model or 'mmssl').lower()

    @property
    def dataset_name(self) -> str:
        return self.dataset or 'tiktok'

    def train_updates(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in TRAIN_FLAGS}

    def to_record(self) -> dict[str, Any]:
        """The :data:`RECORDED` fields, YAML-safe (overrides as ``key=value`` strings)."""
        out = {k: getattr(self, k) for k in self.RECORDED}
        out['overrides'] = [o if isinstance(o, str) else f'{o[0]}={json.dumps(_plain(o[1]))}'
                            for o in self.overrides]
        if out['config_file'] is not None:
            out['config_file'] = str(out['config_file'])
        return _plain(out)

    @classmethod
    def from_record(cls, saved: dict[str, Any]) -> RunRequest:
        """The request a run folder's ``config.yaml`` holds: its ``request:`` section, or for
        a run written before requests were stored, the top-level ``model``, ``dataset``,
        ``root``, ``modalities`` and ``wandb_mode`` (then the options it was asked with are
        known only resolved, as ``model_kwargs`` / ``train``)."""
        stored = saved.get('request')
        if isinstance(stored, dict):
            names = {f.name for f in dataclasses.fields(cls)}
            return cls(**{k: v for k, v in stored.items() if k in names and k in cls.RECORDED})
        return cls(model=saved['model'], dataset=saved['dataset'], root=saved.get('root'),
                   modalities=saved.get('modalities'), wandb=saved.get('wandb_mode'))

    def resumed(self, saved: dict[str, Any], run_dir) -> RunRequest:
        """This ``--resume`` request completed from the run's ``config.yaml`` (``saved``):
        model and dataset must agree; the data is found where the run recorded it; the wandb
        mode is kept unless given. The options given now (``config_file``, ``overrides``,
        flags) apply on top of the run's saved resolved options."""
        for key in ('model', 'dataset'):
            given = getattr(self, key)
            if given is not None and _norm(given, key) != _norm(saved[key], key):
                raise ConfigError(f'cannot resume {run_dir} with --{key} {given}: the run was '
                                  f'started with {saved[key]}')
        recorded = saved.get('data') or {}
        dataset = saved['dataset']
        root = self.root if self.root is not None else (
            recorded.get('root') if not _is_path(dataset) else None) or saved.get('root')
        if _is_path(dataset) and recorded.get('root'):
            dataset = recorded['root']
        modalities = self.modalities if self.modalities is not None else (
            saved.get('modalities') if saved.get('modalities') is not None
            else recorded.get('modalities'))
        return dataclasses.replace(self, model=saved['model'], dataset=dataset, root=root,
                                   modalities=modalities,
                                   wandb=self.wandb or RunRequest.from_record(saved).wandb)

    def merged_over(self, saved: dict[str, Any]) -> RunRequest:
        """The request a resumed run records: the saved one (:meth:`from_record`) with this
        one's given fields on top and its overrides after the saved ones, i.e. the request
        that would run the whole run from scratch."""
        old = RunRequest.from_record(saved)
        given = {k: getattr(self, k) for k in self.RECORDED
                 if k not in ('overrides', 'tuned') and getattr(self, k) is not None}
        return dataclasses.replace(old, **given, tuned=old.tuned or self.tuned,
                                   overrides=[*old.overrides, *self.overrides])


@dataclass
class Run:
    """An assembled run: the request, its resolved options, the data and the built model.

    Attributes:
        identity: the data's identity (:func:`load_data`; ``None`` for a graph given as is).
        model_kwargs: the keyword arguments the model was built with (class defaults
            included: what a run records).
        tracker: set by :meth:`start_tracker`.
    """
    request: RunRequest
    model_cls: type
    options: RunOptions
    graph: RecGraph
    identity: dict[str, Any] | None
    model_kwargs: dict[str, Any]
    model: Any
    tracker: Tracker | None = None

    def start_tracker(self, mode: str, **kwargs) -> Tracker:
        """The run's tracker (:func:`~mmssl_pyg.training.tracking.make_tracker`)."""
        self.tracker = make_tracker(mode, **kwargs)
        return self.tracker


def prepare_run(request: RunRequest, *, base: tuple[dict, dict] | None = None,
                data: tuple[RecGraph, dict[str, Any] | None] | None = None,
                preset_dataset: str | None = None,
                expect_data: tuple[dict | None, str] | None = None,
                before_data: Callable[[RunOptions], None] | None = None,
                after_data: Callable[[RunOptions, RecGraph], None] | None = None,
                ctx: DistContext | None = None) -> Run:
    """Assemble a run: options -> data -> seed -> model, the one sequence every entry point
    takes.

    Args:
        request: what to run.
        base: ``(model_kwargs, train_options)`` replacing the preset (a resumed run's or a
            checkpoint's saved options; see
            :func:`~mmssl_pyg.training.presets.resolve_options`).
        data: ``(graph, identity)`` already loaded (a trial reusing the study's data, a
            synthetic timing graph); otherwise :func:`load_data` loads the request's dataset.
        preset_dataset: the preset block to use (default: the dataset's key).
        expect_data: ``(recorded identity, what)``: the data loaded must be the data a run or
            checkpoint recorded (:func:`check_same_data`).
        before_data: checks that need the options and must fail before the (slow) loading.
        after_data: called with the options and the graph before the model is built.
        ctx: the data-parallel context (rank 0 loads first: it may write ``processed/``).

    The options are checked before any data is read (typos fail at once), and the model is
    built right after seeding with the trainer's ``seed``, so the same request builds the same
    weights in every entry point.
    """
    model_cls, options = resolve_request(request, base=base, preset_dataset=preset_dataset)
    if before_data is not None:
        before_data(options)
    graph, identity = data if data is not None else _load_request_data(request, ctx)
    if expect_data is not None:
        check_same_data(expect_data[0], identity, expect_data[1])
    if after_data is not None:
        after_data(options, graph)
    model_kwargs = run_model_kwargs(model_cls, options)
    seed_everything(options.train.seed)
    model = model_cls(graph, **model_kwargs)
    return Run(request, model_cls, options, graph, identity, model_kwargs, model)


def resolve_request(request: RunRequest, *, base: tuple[dict, dict] | None = None,
                    preset_dataset: str | None = None) -> tuple[type, RunOptions]:
    """``(model class, resolved options)`` of a request: the first stage of
    :func:`prepare_run`, alone where only the options are needed (a benchmark unit's key)."""
    from ..models import get_model_class
    model_cls = get_model_class(request.model_name)
    options = resolve_options(
        model_cls, preset_dataset or _dataset_key(request.dataset_name),
        model_name=request.model_name, config_file=request.config_file,
        overrides=request.overrides, train_updates=request.train_updates(), base=base,
        tuned=request.tuned)
    return model_cls, options


def _load_request_data(request: RunRequest, ctx: DistContext | None):
    """:func:`load_data` of the request; under torchrun rank 0 first (it may write the
    dataset's ``processed/`` files the others then read)."""
    if ctx is None or not ctx.enabled:
        return load_data(request.dataset_name, request.root, request.modalities,
                         request.force_reload)
    if not ctx.is_main:
        ctx.barrier()
    try:
        return load_data(request.dataset_name, request.root, request.modalities,
                         request.force_reload and ctx.is_main)
    finally:
        if ctx.is_main:
            ctx.barrier()


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


def train_run(request: RunRequest | None = None, **fields) -> RunResult:
    """Train the model of a :class:`RunRequest` (``fields`` set or replace its fields, e.g.
    ``train_run(model='lightgcn', dataset='tiktok-mini', epochs=5)``) on its dataset with its
    preset, write ``metrics.json`` and return.

    Defaults: MMSSL on TikTok with the preset's settings. ``run_dir`` defaults to
    ``runs/<model>-<dataset>-<timestamp>``; it receives ``config.yaml`` (the request, the
    resolved options and the identity of the data: absolute folder and content digest),
    ``best.pt`` / ``last.pt``, ``metrics.json`` and, unless ``wandb='disabled'``, the
    ``wandb/`` run folder (``wandb``: ``'disabled'``, ``'offline'`` (default) or
    ``'online'``). ``resume=True`` continues the run in ``run_dir`` with its saved options,
    data and wandb run (:meth:`RunRequest.resumed`); only the
    :data:`~mmssl_pyg.training.options.RESUMABLE` trainer options may change.

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
    request = dataclasses.replace(request or RunRequest(), **fields)
    ctx, _ = init_distributed(request.device or 'auto')
    try:
        return _train(ctx, request)
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


def _train(ctx: DistContext, request: RunRequest) -> RunResult:
    """The stages of :func:`train_run`: check the request (and read the run it resumes),
    assemble the run, build the trainer, claim the folder, fit."""
    request, saved = _checked_request(ctx, request)

    def before_data(options: RunOptions) -> None:
        if saved is not None:
            _check_resumable(saved, options, request.run_dir)
        _amp_dtype(options.train.precision, resolve_device(options.train.device))  # fp16, CPU
        if not request.resume and request.run_dir is not None:
            _on_rank0(ctx, lambda: _check_new_run_dir(Path(request.run_dir), request.force))

    # The model and the trainer are built before the run folder is touched: their own checks
    # (an ablation name, missing features, the critic memory check, ...) refuse the command
    # while an old run (replaced by --force) and the folder are still as they were.
    run = prepare_run(
        request, base=None if saved is None else (saved['model_kwargs'], saved['train']),
        expect_data=None if saved is None else (saved.get('data'), f'run {request.run_dir}'),
        before_data=before_data,
        after_data=lambda options, graph: check_cutoffs(options.train.ks, graph.num_items,
                                                        'ks'),
        ctx=ctx)
    trainer = Trainer(run.model, run.graph, run.options.train, distributed=ctx)
    folder = _RunFolder(ctx, request, saved)
    with folder:
        return _fit_in(ctx, folder.path, run, saved, trainer)


def _checked_request(ctx: DistContext, request: RunRequest
                     ) -> tuple[RunRequest, dict[str, Any] | None]:
    """The request to run (for ``resume``: merged over the saved one) and the resumed run's
    ``config.yaml`` (``None`` for a new run); refuses contradictory flags before any work."""
    if request.resume and request.force:
        raise ConfigError('--resume continues a run and --force replaces it: give one of them')
    if request.run_dir is not None:
        check_folder(request.run_dir, '--run-dir')
    check_root_option(request.dataset, request.root)
    saved = None
    if request.resume:
        if request.run_dir is None:
            raise ConfigError('--resume needs --run-dir: the folder of the run to continue')
        saved = _on_rank0(ctx, lambda: read_run_config(request.run_dir))
        request = request.resumed(saved, request.run_dir)
    request = dataclasses.replace(request, model=request.model_name,
                                  dataset=request.dataset_name,
                                  wandb=request.wandb or 'offline')
    if ctx.is_main:
        check_wandb_mode(request.wandb)  # an online run without a login fails now, not later
    return request, saved


class _RunFolder:
    """The run folder, claimed on rank 0 (created, locked, cleaned of stale ``.tmp`` files,
    checked for ``resume`` / emptied of the old run's files for ``force``) on entry; on exit
    unlocked, and removed again when this run created it and wrote nothing into it."""

    def __init__(self, ctx: DistContext, request: RunRequest, saved: dict | None):
        self.ctx, self.request, self.saved = ctx, request, saved
        self.lock: FolderLock | None = None
        self.created: Path | None = None
        self.path: Path | None = None

    def __enter__(self) -> Path:
        self.path = _on_rank0(self.ctx, self._claim)
        return self.path

    def _claim(self) -> Path:
        request = self.request
        path = request.run_dir
        if path is None:
            stamp = time.strftime('%Y%m%d-%H%M%S')
            path = Path(request.runs_root) / \
                f'{request.model_name}-{_dataset_key(request.dataset_name)}-{stamp}'
        path = check_folder(path, '--run-dir')
        created = not path.exists()
        self.lock = FolderLock(path).acquire()
        if created:
            self.created = path
        try:
            clean_stale_tmp(path, all_tmp=True)  # ours while locked: left by a killed write
            if request.resume:
                _check_resume_checkpoint(path, self.saved)
            else:
                _check_new_run_dir(path, request.force)
                if request.force:
                    for name in RUN_FILES:
                        (path / name).unlink(missing_ok=True)
        except BaseException:
            self.lock.release()
            if created:
                with contextlib.suppress(OSError):
                    path.rmdir()
            self.lock = None
            raise
        return path

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and self.lock is not None and self.created is not None:
            _remove_if_empty(self.created, keep=LOCK_NAME)  # a refused run leaves no folder
        if self.lock is not None:
            self.lock.release()
        if self.created is not None:
            with contextlib.suppress(OSError):
                self.created.rmdir()  # only when nothing (not even a .lock) is left


def _remove_if_empty(folder: Path, keep: str) -> None:
    """Remove the stale ``.tmp`` files of a folder this process created, so that
    ``rmdir`` after the lock's release can remove a folder in which nothing was written."""
    with contextlib.suppress(OSError):
        if all(p.name == keep or (p.name.startswith('.') and p.name.endswith('.tmp'))
               for p in folder.iterdir()):
            clean_stale_tmp(folder, all_tmp=True)


def _run_record(run: Run, saved: dict | None) -> dict[str, Any]:
    """What ``config.yaml`` holds: the request (merged over the saved one on resume; the data
    by absolute folder, so that evaluate finds it from any folder), the data's identity and the
    resolved options."""
    request, identity = run.request, run.identity
    stored_dataset = identity['root'] if _is_path(request.dataset_name) \
        else request.dataset_name
    root = None if request.root is None else str(Path(request.root).resolve())
    located = dataclasses.replace(request, dataset=stored_dataset, root=root)
    if saved is not None:
        located = located.merged_over(saved)
    return {'model': request.model_name, 'dataset': stored_dataset, 'root': root,
            'modalities': request.modalities, 'dataset_name': run.graph.name,
            'data': identity, 'model_kwargs': _plain(run.model_kwargs),
            'train': run.options.train.to_dict(), 'request': located.to_record()}


def _fit_in(ctx, run_dir: Path, run: Run, saved: dict | None, trainer: Trainer) -> RunResult:
    """Start the tracker, write ``config.yaml``, fit, write ``metrics.json`` (rank 0)."""
    record = _run_record(run, saved)
    tracker = run.start_tracker(run.request.wandb if ctx.is_main else 'disabled', dir=run_dir,
                                name=run_dir.name, run_id=(saved or {}).get('wandb_id'))
    if ctx.is_main:
        record['wandb_id'] = getattr(tracker, 'run_id', None)
        record['wandb_mode'] = run.request.wandb
        atomic_write(run_dir / RUN_CONFIG, yaml.safe_dump(record, sort_keys=False))
    meta = {k: record[k] for k in ('model', 'dataset', 'root', 'modalities', 'dataset_name',
                                   'data', 'model_kwargs')}
    try:
        if ctx.is_main:
            trainer.tracker = tracker
        trainer.checkpoint_dir, trainer.meta = run_dir, meta
        fit = trainer.fit(resume=run.request.resume)
    finally:
        tracker.finish()
    result = RunResult(fit, run_dir, run.request.model_name, run.request.dataset_name,
                       run.model_kwargs, run.options.train)
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
    :class:`~mmssl_pyg.training.run_folder.DataMismatchError`, whatever the working
    directory. The model is assembled by :func:`prepare_run` from the recorded options."""
    path = resolve_checkpoint(checkpoint)
    state = load_checkpoint(path)
    meta = state.get('meta') if isinstance(state.get('meta'), dict) else {}
    if 'model' not in meta or 'dataset' not in meta or 'model' not in state:
        raise CheckpointError(f'checkpoint {str(path)!r} has no model/dataset record (meta); it '
                              f'was not written by mmssl-pyg train. Load it with Trainer in '
                              f'Python.')
    recorded = meta.get('data') if isinstance(meta.get('data'), dict) else {}
    run = prepare_run(_checkpoint_request(path, meta, recorded, root, force_reload),
                      base=(dict(meta.get('model_kwargs') or {}), {}),
                      expect_data=(recorded, f'checkpoint {str(path)!r}'))
    try:
        run.model.load_state_dict(state['model'])
    except RuntimeError as err:
        first = str(err).strip().splitlines()[-1].strip()
        raise CheckpointError(f'checkpoint {str(path)!r} does not fit the model built from its '
                              f'record and the data in {run.identity["root"]} ({first}). Fix: '
                              f'evaluate it on the data it was trained on') from None
    dev = resolve_device(device)
    return run.model.to(dev).eval(), run.graph.to(dev), state


def _checkpoint_request(path: Path, meta: dict, recorded: dict, root: str | None,
                        force_reload: bool) -> RunRequest:
    """Where a checkpoint's data is: the recorded absolute folder unless ``root`` is given
    (a folder dataset: the folder is the dataset)."""
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
    return RunRequest(model=meta['model'], dataset=dataset, root=root, modalities=modalities,
                      force_reload=force_reload)


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
