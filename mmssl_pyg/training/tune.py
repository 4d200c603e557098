"""Hyper-parameter search with Optuna: ``mmssl-pyg tune --model M --dataset D``.

**Search spaces** live in the model's preset, ``configs/<model>.yaml``, in a ``search:``
section shaped like the others (a ``default:`` block, optional per-dataset blocks that add,
replace or, with ``null``, drop parameters)::

    search:
      default:
        lr:                {low: 1.0e-4, high: 1.0e-2, log: true, source: "..."}
        model.num_layers:  {choices: [1, 2, 3, 4], source: "LightGCN paper, Sec. 4.1.2"}

A parameter is a range (``low``/``high``, optional ``log`` or ``step``; integers when both
ends are integers, unless ``type: float``) or a list of ``choices``; ``source`` (required)
says where the range comes from. Names route like ``key=value`` overrides (``model.`` /
``train.`` force a section).

**A study** (:func:`tune`) is stored in a database (default a SQLite file in the study folder;
any SQLAlchemy URL works, so several processes or machines can share one study) and resumes
where it stopped: a new process continues the same study, and a trial whose process died is
marked failed once its heartbeat is older than ``grace_period`` and rerun with the same
parameters. Trials are sampled by TPE (seeded) and pruned by the median rule on the validation
metric reported after every epoch. Each trial trains with the shared
:class:`~mmssl_pyg.training.Trainer` and is scored on validation only: ``fit(test=False)``
never reads the test split. ``trials`` counts the study's finished (complete or pruned) trials
over every process and restart, ``timeout`` its summed trial seconds, so every model gets the
same trial count and the same budget however often the search was interrupted.

**The result** is written back as a tuned preset, ``configs/tuned/<model>-<dataset>.yaml``:
the best trial's parameters as ``model:`` / ``train:`` sections plus a ``provenance:`` block
(study, storage, trial counts, best validation value, date, commit, search space with its
sources). ``mmssl-pyg train --tuned`` (``resolve_options(tuned=True)``) applies it on top of the
preset; the file is also a valid ``--config`` file.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import os
import shlex
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .options import ConfigError
from .presets import parse_overrides, tuned_preset_path
from .search_space import (
    _git_commit,
    _hide_password,
    load_search_space,
    split_sections,
    write_tuned_preset,
)
from .tracking import BudgetTracker

#: wandb project of the trials (one run per trial, grouped by study).
TUNE_PROJECT = 'mmssl-pyg-tune'
#: Pruner defaults: no pruning before this many trials have finished, nor before this epoch;
#: a trial is pruned when its validation metric is below this percentile of the finished
#: trials' at the same epoch (50: Optuna's median rule).
PRUNER_STARTUP_TRIALS = 5
PRUNER_WARMUP_EPOCHS = 5
PRUNER_PERCENTILE = 50.0
#: TPE's random start-up trials (Optuna's default).
TPE_STARTUP_TRIALS = 10
#: A trial whose process died is rerun with its parameters at most this many times; with
#: ``trial_checkpoints`` each rerun resumes from the last epoch the dead process saved.
RETRIES = 1
RETRIES_WITH_CHECKPOINTS = 5
#: Per-trial checkpoint folders under the study folder (``trial_checkpoints``).
TRIAL_CHECKPOINTS = 'trials'


# ---------------------------------------------------------------------------------------------
# the study


class _TrialTracker(BudgetTracker):
    """Also reports the validation metric to Optuna after each evaluated epoch and prunes the
    trial when the pruner says so; the budget is the study's remaining seconds."""

    def __init__(self, inner, trial, key: str, budget: float | None):
        super().__init__(inner, budget)
        self.trial, self.key = trial, key

    def log(self, metrics, step):
        import optuna
        self.inner.log(metrics, step)
        value = metrics.get(self.key)
        if value is not None:
            self.trial.report(float(value), step)
            if self.trial.should_prune():
                self.trial.set_user_attr('pruned_at_epoch', step)
                raise optuna.TrialPruned(f'pruned after epoch {step} ({self.key} {value:.4g})')
        self.check_budget(step)


@dataclass
class TuneResult:
    """What :func:`tune` returns.

    Attributes:
        study_name, storage: the study and its database URL (password hidden).
        counts: trials per state (``complete``, ``pruned``, ``failed``, ``running``, ``waiting``).
        spent_seconds: summed seconds of the finished trials (the ``timeout`` budget's use).
        best_trial, best_value, best_params: the best complete trial (``None`` when none).
        preset: the tuned preset written (``None`` when not written).
        stopped_by: ``'trials'``, ``'timeout'`` (or ``None`` when neither was reached).
    """
    study_name: str
    storage: str
    counts: dict[str, int]
    spent_seconds: float
    best_trial: int | None = None
    best_value: float | None = None
    best_params: dict[str, Any] = field(default_factory=dict)
    preset: Path | None = None
    stopped_by: str | None = None


def _counts(study) -> dict[str, int]:
    from optuna.trial import TrialState
    names = {TrialState.COMPLETE: 'complete', TrialState.PRUNED: 'pruned',
             TrialState.FAIL: 'failed', TrialState.RUNNING: 'running',
             TrialState.WAITING: 'waiting'}
    out = dict.fromkeys(names.values(), 0)
    for t in study.get_trials(deepcopy=False):
        out[names[t.state]] += 1
    return out


def spent_seconds(study) -> float:
    """Summed seconds of the study's finished (complete or pruned) trials, as recorded by the
    trials themselves (a killed trial's partial time is not counted)."""
    from optuna.trial import TrialState
    return float(sum(t.user_attrs.get('seconds', 0.0) for t in study.get_trials(
        deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))))


def _fmt(value: Any) -> str:
    return f'{value:.4g}' if isinstance(value, float) else str(value)


@dataclass
class TuneOptions:
    """What :func:`tune` is asked for (the ``mmssl-pyg tune`` flags, one field each).

    Attributes:
        model, dataset: what to tune (the dataset as ``mmssl-pyg train --dataset`` takes it).
        trials: finished (complete or pruned) trials the study should have; a resumed or shared
            study counts the trials it already has.
        timeout: the study's budget in summed trial seconds (``None``: no budget). No trial
            starts once it is used up, and a running trial stops (its best validation epoch so
            far is its score) when the budget runs out during it.
        storage: database URL (default ``sqlite:///<run_dir>/study.db``).
        study_name: default ``<model>-<dataset>``.
        seed: seeds TPE, mixed with the number of trials already in the study
            (``seed * 1_000_003 + trials``), so a resumed process does not replay the draws of
            the first. Give each process sharing a study its own ``seed``. Every trial trains
            with the same seed, the preset's training ``seed`` (fix another with
            ``overrides=['seed=N']``).
        overrides, config_file: options fixed for every trial (``key=value`` strings / a YAML
            file); a searched option cannot also be fixed.
        root, modalities: as for :class:`~mmssl_pyg.training.run.RunRequest`.
        device: trainer device (default: the preset's, ``auto``).
        wandb: ``'offline'`` (default; one run per trial under ``<run_dir>/wandb``),
            ``'online'`` or ``'disabled'``.
        prune: percentile pruning on the validation metric after every epoch: a trial whose
            value is below the ``prune_percentile``-th percentile of the earlier trials' values
            at the same epoch stops (50, the default, is the median rule); no pruning in the
            first ``prune_startup`` finished trials nor before epoch ``prune_warmup``.
        startup_trials: TPE's random start-up trials (counted over the whole study).
        multivariate: TPE models the searched options jointly (``multivariate=True``) instead
            of one at a time.
        run_dir: the study folder (default ``<runs_root>/tune/<study_name>``).
        write_preset: write the best trial to ``<preset_dir>/<model>-<dataset>.yaml``
            (default folder: ``mmssl_pyg/configs/tuned``).
        force: replace an existing tuned preset (otherwise refused before the study runs).
        heartbeat_interval, grace_period: seconds; a running trial whose process has not
            beaten for ``grace_period`` is marked failed and retried once with its parameters
            (up to :data:`RETRIES_WITH_CHECKPOINTS` times with ``trial_checkpoints``).
        trial_checkpoints: each trial writes ``<run_dir>/trials/<number>/last.pt`` (and
            ``best.pt``) after every epoch, and a retried trial resumes from the checkpoint of
            the trial it retries instead of starting again: its epochs and validation values
            are those of the uninterrupted trial (the trainer's resume restores weights,
            optimisers, random streams, history and patience), and the dead trial's values up
            to that epoch are reported again under the new trial. A trial's folder is removed
            once it completes or is pruned. For studies whose trials outlive their processes
            (long trials on shared machines); nothing else of a trial changes.
        log: receives the progress lines (default ``print``; one line per trial).
    """
    model: str
    dataset: str
    trials: int
    timeout: float | None = None
    storage: str | None = None
    study_name: str | None = None
    seed: int = 0
    overrides: list[str] | None = None
    config_file: str | os.PathLike | None = None
    root: str | None = None
    modalities: list[str] | None = None
    device: str | None = None
    wandb: str = 'offline'
    prune: bool = True
    run_dir: str | os.PathLike | None = None
    runs_root: str | os.PathLike = 'runs'
    write_preset: bool = True
    preset_dir: str | os.PathLike | None = None
    force: bool = False
    heartbeat_interval: int = 60
    grace_period: int = 180
    startup_trials: int = TPE_STARTUP_TRIALS
    multivariate: bool = False
    prune_percentile: float = PRUNER_PERCENTILE
    prune_warmup: int = PRUNER_WARMUP_EPOCHS
    prune_startup: int = PRUNER_STARTUP_TRIALS
    trial_checkpoints: bool = False
    log: Callable[[str], None] | None = None

    def check(self) -> None:
        """Refuse bad counts, budgets and search settings before anything runs."""
        if not isinstance(self.trials, int) or self.trials < 1:
            raise ConfigError(f'--trials must be a positive integer, got {self.trials!r}')
        if self.timeout is not None and not self.timeout > 0:
            raise ConfigError(f'--timeout must be a positive number of seconds, got '
                              f'{self.timeout!r}')
        _check_search_settings(self.startup_trials, self.prune_percentile, self.prune_warmup,
                               self.prune_startup)


def tune(options: TuneOptions | str, /, *args, **fields) -> TuneResult:
    """Run (or continue) the Optuna study of a model on a dataset; write the tuned preset.

    ``options`` is a :class:`TuneOptions`, or its fields are given directly
    (``tune('mf', 'tiktok-mini', trials=20, timeout=3600)``). Each trial is a run assembled by
    :func:`~mmssl_pyg.training.run.prepare_run` and scored on validation only.
    """
    if not isinstance(options, TuneOptions):
        options = TuneOptions(options, *args, **fields)
    elif args:
        raise TypeError('tune(TuneOptions(...)) takes its other fields as keywords')
    elif fields:
        options = dataclasses.replace(options, **fields)
    search = _Search(options)
    search.prepare()
    search.open_study()
    search.optimize()
    return search.result()


def _optuna():
    try:
        import optuna
    except ImportError:
        raise ImportError('mmssl-pyg tune needs Optuna, which is not installed. Run `pip install '
                          '"mmssl-pyg[tune]"` (or `pip install optuna`).') from None
    return optuna


class _Search:
    """One :func:`tune` call, in stages: :meth:`prepare` (options, data, one model, the
    preset target: every check before a file is written), :meth:`open_study` (database,
    pruner, sampler, identity), :meth:`optimize` (the trials) and :meth:`result` (the tuned
    preset)."""

    def __init__(self, options: TuneOptions):
        self.optuna = _optuna()
        options.check()
        self.o = options
        self.log = options.log or (lambda line: print(line, flush=True))
        self.stopped_by: str | None = None

    # -- stage 1: everything checked before a file is written

    def prepare(self) -> None:
        from ..models import get_model_class
        from ..utils.io import check_folder
        from .run import _dataset_key, check_root_option, prepare_run
        o = self.o
        self.model_cls = get_model_class(o.model)
        self.model = o.model.lower()
        if not getattr(self.model_cls, 'trainable', True):
            raise ConfigError(f'{self.model} has no hyper-parameters to tune (it is not trained)')
        self.key = _dataset_key(o.dataset)
        self.space = load_search_space(self.model, self.key)
        self.fixed = parse_overrides(o.overrides)
        both = sorted({k for k, _ in self.fixed} & set(self.space.names))
        if both:
            raise ConfigError(f'{both} are searched ({self.space.path}: search:) and fixed on the '
                              f'command line; drop the key=value or remove it from the search '
                              f'space')

        def check_paths(_options) -> None:
            check_root_option(o.dataset, o.root)
            for option, folder in (('--run-dir', o.run_dir), ('--preset-dir', o.preset_dir)):
                if folder is not None:
                    check_folder(folder, option, 'give a folder path')  # '' means the current

        # One point of the space, assembled like every trial: bad option names or values fail
        # before the data is loaded; then the data (its content digest is part of the study's
        # identity) and one model built on it (its own checks).
        probe = [(p.name, p.choices[0] if p.kind == 'categorical' else p.low)
                 for p in self.space.params]
        first = prepare_run(self.request(probe), before_data=check_paths)
        self.first, self.data = first.options, (first.graph, first.identity)
        self.metric = self.first.train.metric
        if o.write_preset:
            _check_preset_target(tuned_preset_path(self.model, self.key, o.preset_dir), o.force)

    def request(self, params: list[tuple[str, Any]]):
        """The run request of one point of the space (the fixed options, then ``params``)."""
        from .run import RunRequest
        o = self.o
        return RunRequest(model=self.model, dataset=o.dataset, root=o.root,
                          modalities=o.modalities, config_file=o.config_file,
                          overrides=self.fixed + list(params), device=o.device, progress=False)

    # -- stage 2: the study

    def open_study(self) -> None:
        o, optuna = self.o, self.optuna
        self.study_name = o.study_name or f'{self.model}-{self.key}'
        self.run_dir = Path(o.run_dir) if o.run_dir is not None \
            else Path(o.runs_root) / 'tune' / self.study_name
        self.storage = o.storage or f'sqlite:///{(self.run_dir / "study.db").resolve()}'
        rdb = self._storage()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        pruner = self._pruner()
        self.sampler_text = (f'TPESampler(n_startup_trials={o.startup_trials}, '
                             f'multivariate={o.multivariate})')
        self.study = optuna.create_study(storage=rdb, study_name=self.study_name,
                                         direction='maximize', pruner=pruner,
                                         load_if_exists=True)
        self.identity = {
            **_data_and_options(self.data[1], self.first, self.space.names),
            'model': self.model, 'dataset': self.key, 'metric': f'val/{self.metric}',
            'search_space': self.space.to_dict(),
            'fixed': [f'{k}={v}' for k, v in self.fixed] +
            ([f'--config {o.config_file}'] if o.config_file else []),
            'train_seed': self.first.train.seed, 'sampler': self.sampler_text,
            'pruner': self.pruner_text}
        _check_identity(self.study, self.identity, self.study_name, self.storage)
        self.existing = len(self.study.get_trials(deepcopy=False))
        self.sampler_seed = (o.seed * 1_000_003 + self.existing) % 2**32
        with warnings.catch_warnings():  # multivariate TPE is marked experimental
            warnings.simplefilter('ignore')
            self.study.sampler = optuna.samplers.TPESampler(
                seed=self.sampler_seed, n_startup_trials=o.startup_trials,
                multivariate=o.multivariate)
        self.safe_url = _hide_password(self.storage)
        self.log(f'[tune {self.study_name}] {self.model} on {self.key}: {self.existing} '
                 f'trial(s) in {self.safe_url}; target {o.trials} finished trials' +
                 (f', budget {o.timeout:.0f}s' if o.timeout else '') +
                 f'; searching {", ".join(self.space.names)}')

    def _storage(self):
        """The study database (the study folder is created for it, and removed again when
        the database cannot be opened and the folder was new)."""
        from optuna.storages import RDBStorage, RetryFailedTrialCallback
        created = not self.run_dir.exists()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        storage = self.storage
        with warnings.catch_warnings():  # heartbeats are marked experimental
            warnings.simplefilter('ignore')
            engine = {'connect_args': {'timeout': 60}} if storage.startswith('sqlite') else None
            try:
                return RDBStorage(storage, engine_kwargs=engine,
                                  heartbeat_interval=self.o.heartbeat_interval,
                                  grace_period=self.o.grace_period,
                                  failed_trial_callback=RetryFailedTrialCallback(
                                      max_retry=RETRIES_WITH_CHECKPOINTS
                                      if self.o.trial_checkpoints else RETRIES))
            except Exception as err:  # noqa: BLE001 - SQLAlchemy/driver errors vary
                if created:  # a refused command leaves no empty study folder
                    with contextlib.suppress(OSError):
                        self.run_dir.rmdir()
                raise ConfigError(f'--storage {_hide_password(storage)}: cannot open the study '
                                  f'database ({type(err).__name__}: {err}). Use a SQLAlchemy '
                                  f'URL such as sqlite:///path/study.db or '
                                  f'postgresql://user:pass@host/db') from None

    def _pruner(self):
        """Optuna's PercentilePruner(P) keeps the top P% of trials; ``prune_percentile`` is the
        percentile below which a trial stops, so Optuna gets its complement (50 = the
        median)."""
        o, optuna = self.o, self.optuna
        keep = 100.0 - o.prune_percentile
        self.pruner_text = (f'optuna PercentilePruner(percentile={keep:g}, n_startup_trials='
                            f'{o.prune_startup}, n_warmup_steps={o.prune_warmup}): prunes below '
                            f'the {o.prune_percentile:g}th percentile') if o.prune else 'none'
        if not o.prune:
            return optuna.pruners.NopPruner()
        return optuna.pruners.PercentilePruner(keep, n_startup_trials=o.prune_startup,
                                               n_warmup_steps=o.prune_warmup)

    # -- stage 3: the trials

    def objective(self, trial) -> float:
        """One trial: the run of the suggested point, fitted on validation only."""
        from .run import prepare_run
        from .trainer import NonFiniteLossError, Trainer
        o, t0 = self.o, time.perf_counter()
        params = self.space.suggest(trial)
        run = prepare_run(self.request(params), data=self.data)
        remaining = None if o.timeout is None else \
            max(o.timeout - spent_seconds(self.study), 0.0)
        inner = run.start_tracker(
            o.wandb, dir=self.run_dir, name=f'{self.study_name}-trial{trial.number}',
            project=TUNE_PROJECT, group=self.study_name, job_type='trial',
            config={'study': self.study_name, 'trial': trial.number, 'params': dict(params),
                    'fixed': self.identity['fixed']})
        tracker = _TrialTracker(inner, trial, f'val/{self.metric}', remaining)
        folder, carried = _take_over_checkpoints(trial, self.run_dir) \
            if o.trial_checkpoints else (None, 0.0)
        try:
            trainer = Trainer(run.model, run.graph, run.options.train, tracker=tracker,
                              checkpoint_dir=folder)
            tracker.trainer = trainer
            # selection on validation: test is never read
            fit = trainer.fit(resume=folder is not None, test=False)
        except NonFiniteLossError as err:
            trial.set_user_attr('diverged', str(err)[:500])
            _remove_checkpoints(folder)
            raise self.optuna.TrialPruned(f'diverged: {str(err)[:200]}') from None
        except self.optuna.TrialPruned:
            _remove_checkpoints(folder)
            raise
        finally:  # a resumed trial's seconds include its kept epochs'
            trial.set_user_attr('seconds', time.perf_counter() - t0 + carried)
            tracker.finish()
        _remove_checkpoints(folder)
        trial.set_user_attr('best_epoch', fit.best_epoch)
        trial.set_user_attr('epochs_run', len(fit.history))
        trial.set_user_attr('val', fit.val)
        if tracker.cut_at is not None:
            trial.set_user_attr('budget_cut_at_epoch', tracker.cut_at)
        return float(fit.val[self.metric])

    def finished(self) -> int:
        c = _counts(self.study)
        return c['complete'] + c['pruned']

    def after_trial(self, study, frozen) -> None:
        """Log the trial's line; stop the study at its trial count or budget."""
        o = self.o
        done, spent = self.finished(), spent_seconds(study)
        try:
            best = f'best {study.best_value:.4f} (trial {study.best_trial.number})'
        except ValueError:
            best = 'no complete trial yet'
        params = ' '.join(f'{k}={_fmt(v)}' for k, v in frozen.params.items())
        self.log(f'[tune {self.study_name}] trial {frozen.number}: '
                 f'{_trial_outcome(frozen, self.metric)}; {params}; '
                 f'{frozen.user_attrs.get("seconds", float("nan")):.1f}s | {done}/{o.trials} '
                 f'finished, {spent:.0f}s' + (f' of {o.timeout:.0f}s' if o.timeout else '') +
                 f'; {best}')
        if done >= o.trials:
            self.stopped_by = 'trials'
            study.stop()
        elif o.timeout is not None and spent >= o.timeout:
            self.stopped_by = 'timeout'
            study.stop()

    def optimize(self) -> None:
        o = self.o
        if self.finished() >= o.trials:
            self.stopped_by = 'trials'
        elif o.timeout is not None and spent_seconds(self.study) >= o.timeout:
            self.stopped_by = 'timeout'
        if self.stopped_by is not None:
            self.log(f'[tune {self.study_name}] nothing to run: the study already reached its '
                     f'{"trial count" if self.stopped_by == "trials" else "budget"}')
            return
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', category=self.optuna.exceptions.ExperimentalWarning)
            self.study.optimize(self.objective, callbacks=[self.after_trial])

    # -- stage 4: the result

    def result(self) -> TuneResult:
        from optuna.trial import TrialState
        counts, spent = _counts(self.study), spent_seconds(self.study)
        result = TuneResult(self.study_name, self.safe_url, counts, spent,
                            stopped_by=self.stopped_by)
        if not self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            self.log(f'[tune {self.study_name}] no complete trial, so no tuned preset was '
                     f'written')
            return result
        best = self.study.best_trial
        result.best_trial, result.best_value = best.number, float(best.value)
        result.best_params = dict(best.params)
        self.log(f'[tune {self.study_name}] best trial {best.number}: val {self.metric} '
                 f'{best.value:.4f} ({" ".join(f"{k}={_fmt(v)}" for k, v in best.params.items())}'
                 f'); trials {counts}')
        if self.o.write_preset:
            result.preset = self.write_preset(best, counts, spent)
        return result

    def provenance(self, best, counts: dict[str, int], spent: float) -> dict[str, Any]:
        o = self.o
        return {
            'study': self.study_name, 'storage': self.safe_url,
            'metric': f'validation {self.metric}',
            'best_trial': best.number, 'best_value': float(best.value),
            'best_epoch': best.user_attrs.get('best_epoch'),
            'trials': {'complete': counts['complete'], 'pruned': counts['pruned'],
                       'failed': counts['failed'], 'target': o.trials},
            'budget_seconds': o.timeout, 'spent_seconds': round(spent, 1),
            'sampler': f'{self.sampler_text[:-1]}, seed={self.sampler_seed}) (--seed {o.seed}, '
                       f'{self.existing} trials already in the study when this process '
                       f'started)',
            'pruner': self.pruner_text,
            'train_seed': self.first.train.seed, 'fixed': self.identity['fixed'],
            'search_space': self.space.to_dict(),
            'date': _dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M:%S UTC'),
            'commit': _git_commit(),
            'command': 'mmssl-pyg ' + shlex.join(sys.argv[1:]) if sys.argv[0].endswith(
                'mmssl-pyg') else shlex.join(sys.argv),
        }

    def write_preset(self, best, counts: dict[str, int], spent: float) -> Path | None:
        """Write the tuned preset (never replacing one that appeared meanwhile without
        ``force``)."""
        o, name = self.o, self.study_name
        path = tuned_preset_path(self.model, self.key, o.preset_dir)
        provenance = self.provenance(best, counts, spent)
        if path.is_file() and not o.force:  # written by another process during the study
            self.log(f'[tune {name}] {path} appeared while the study ran; it was not replaced '
                     f'(pass --force to replace it, or --preset-dir DIR to write elsewhere)')
            return None
        if path.is_file():
            old = (yaml.safe_load(path.read_text()) or {}).get('provenance') or {}
            self.log(f'[tune {name}] replacing {path} (study {old.get("study")!r}, best '
                     f'{old.get("best_value")}, {old.get("date")})')
        sections = split_sections(best.params, self.model_cls)
        written = write_tuned_preset(path, self.model, self.key, sections, provenance)
        self.log(f'[tune {name}] wrote {path}; use it with: mmssl-pyg train --model '
                 f'{self.model} --dataset {o.dataset} --tuned')
        return written


def _trial_outcome(frozen, metric: str) -> str:
    """``COMPLETE val recall@20 0.1234 at epoch 7/12``, ``PRUNED after epoch 5``, ..."""
    from optuna.trial import TrialState
    what = frozen.state.name
    if frozen.state == TrialState.COMPLETE:
        what += (f' val {metric} {frozen.value:.4f} at epoch '
                 f'{frozen.user_attrs.get("best_epoch")}/{frozen.user_attrs.get("epochs_run")}')
        if frozen.user_attrs.get('budget_cut_at_epoch'):
            what += ' (budget cut)'
    elif frozen.state == TrialState.PRUNED:
        what += (' (diverged)' if 'diverged' in frozen.user_attrs else
                 f' after epoch {frozen.user_attrs.get("pruned_at_epoch")}')
    return what


def _take_over_checkpoints(trial, run_dir: Path) -> tuple[Path, float]:
    """The checkpoint folder of ``trial`` (``<run_dir>/trials/<number>``). When the trial
    retries one whose process died and that trial saved a checkpoint, its folder becomes this
    trial's, and its validation values up to the checkpoint's epoch are reported under this
    trial (the resumed trainer reports only the epochs after it); ``resumed_from`` records
    ``{trial, epoch, seconds}``, the seconds being the kept epochs' training and validation
    time. Returns the folder and those seconds."""
    from .checkpoint import LAST, load_checkpoint
    root = run_dir / TRIAL_CHECKPOINTS
    folder = root / str(trial.number)
    trials = {t.number: t for t in trial.study.get_trials(deepcopy=False)}
    # Optuna's RetryFailedTrialCallback marks a retry with the number of the trial it retries
    failed = trials[trial.number].system_attrs.get('failed_trial')
    source = None if failed is None else root / str(failed)
    carried = 0.0
    if source is not None and (source / LAST).is_file() and not folder.exists():
        state = load_checkpoint(source / LAST)
        epoch = int(state['epoch'])
        carried = sum(h.get('epoch_seconds', 0.0) + h.get('eval_seconds', 0.0)
                      for h in state['history'])
        for step, value in sorted(trials[failed].intermediate_values.items()):
            if step <= epoch:
                trial.report(value, step)
        os.replace(source, folder)
        trial.set_user_attr('resumed_from', {'trial': failed, 'epoch': epoch,
                                             'seconds': carried})
    folder.mkdir(parents=True, exist_ok=True)
    return folder, carried


def _remove_checkpoints(folder: Path | None) -> None:
    """Remove a finished trial's checkpoint folder (and ``trials/`` once it is empty)."""
    if folder is None:
        return
    import shutil
    shutil.rmtree(folder, ignore_errors=True)
    with contextlib.suppress(OSError):
        folder.parent.rmdir()


def _check_search_settings(startup_trials, prune_percentile, prune_warmup, prune_startup):
    for name, value in (('--startup-trials', startup_trials), ('--prune-warmup', prune_warmup),
                        ('--prune-startup', prune_startup)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f'{name} must be a non-negative integer, got {value!r}')
    if isinstance(prune_percentile, bool) or not isinstance(prune_percentile, (int, float)) \
            or not 0 < prune_percentile < 100:
        raise ConfigError(f'--prune-percentile must be a number strictly between 0 and 100, got '
                          f'{prune_percentile!r}')


def _check_identity(study, identity: dict[str, Any], study_name: str, storage: str) -> None:
    """Store what the study searches on its first use; refuse to mix another search into it
    (other data, modalities, fixed options or ``--config`` content included)."""
    attrs = study.user_attrs
    if not attrs.get('identity'):
        study.set_user_attr('identity', identity)
        return
    old = attrs['identity']
    unknown = [k for k in _LATER_IDENTITY_KEYS if k in identity and k not in old]
    if unknown:
        warnings.warn(f'study {study_name!r} was created by an older version that did not record '
                      f'its {" and ".join(unknown)}; they are not checked', UserWarning,
                      stacklevel=3)
    diffs = [k for k in identity if k not in unknown and _plain(old.get(k)) != _plain(identity[k])]
    if diffs:
        detail = '; '.join(_difference(k, old.get(k), identity[k]) for k in diffs)[:1500]
        raise ConfigError(
            f'study {study_name!r} in {_hide_password(storage)} was created for another search '
            f'({detail}). Fix: continue it with the same data and settings, or start a new '
            f'study with --study-name or --storage.')


def _difference(key: str, old: Any, new: Any) -> str:
    """One identity key's difference, the changed leaves only (a digest, a modality list, a
    fixed option)."""
    if key == 'data' and isinstance(old, dict) and isinstance(new, dict):
        parts = []
        if old.get('digest') != new.get('digest'):
            parts.append(f'data: the study scored data with digest {str(old.get("digest"))[:12]}'
                         f', the data found now has {str(new.get("digest"))[:12]} (other '
                         f'content behind the same name)')
        if _plain(old.get('modalities')) != _plain(new.get('modalities')):
            parts.append(f'modalities: study has {old.get("modalities")}, asked '
                         f'{new.get("modalities")}')
        return '; '.join(parts)
    if key == 'options' and isinstance(old, dict) and isinstance(new, dict):
        parts = []
        for section in ('model', 'train'):
            a, b = old.get(section) or {}, new.get(section) or {}
            parts += [f'{section}.{k}: study has {a.get(k)!r}, asked {b.get(k)!r}'
                      for k in sorted(set(a) | set(b)) if _plain(a.get(k)) != _plain(b.get(k))]
        return 'fixed options differ: ' + ', '.join(parts)
    return f'{key}: study has {old!r}, asked {new!r}'


def _plain(x):
    """JSON-comparable form (tuples -> lists) of what the storage returns."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


#: Identity keys added after studies already existed: a study without them (made by an older
#: version) continues with a warning instead of being refused.
_LATER_IDENTITY_KEYS = ('data', 'options')


def _data_and_options(data: dict[str, Any], options, searched) -> dict[str, Any]:
    """The parts of a study's identity that say which data and which fixed options it
    scores: the data's content digest and loaded modalities, and every resolved option that
    is neither searched nor without effect on a result (``--config`` content included)."""
    from .options import NON_RESULT_TRAIN_KEYS
    train = {k: v for k, v in options.train.to_dict().items()
             if k not in searched and k not in NON_RESULT_TRAIN_KEYS}
    model = {k: v for k, v in options.model_kwargs.items() if k not in searched}
    return {'data': {'digest': data['digest'], 'modalities': list(data['modalities'])},
            'options': _plain({'model': model, 'train': train})}


def _check_preset_target(path: Path, force: bool) -> None:
    """A tuned preset is never replaced without ``force`` (checked before the study runs)."""
    if path.exists() and not force:
        try:
            old = (yaml.safe_load(path.read_text()) or {}).get('provenance') or {}
            what = (f' (study {old.get("study")!r}, best {old.get("best_value")}, '
                    f'{old.get("date")})' if isinstance(old, dict) and old else '')
        except (OSError, yaml.YAMLError, AttributeError, UnicodeDecodeError):
            what = ''
        raise ConfigError(f'tuned preset {path} already exists{what}; nothing was run. Fix: '
                          f'pass --force to replace it, --preset-dir DIR to write it elsewhere, '
                          f'or --no-write')
