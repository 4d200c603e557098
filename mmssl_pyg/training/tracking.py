"""Experiment tracking: a small interface, a no-op tracker and a Weights & Biases tracker.

The trainer only calls :meth:`Tracker.log` (per epoch), :meth:`Tracker.summary` (final test
metrics) and :meth:`Tracker.finish`, so the library runs with wandb disabled or absent.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

WANDB_MODES = ('disabled', 'offline', 'online')


class Tracker:
    """Interface of a tracker (every method is a no-op here)."""

    def log_config(self, config: dict[str, Any]) -> None:
        pass

    def log(self, metrics: dict[str, float], step: int) -> None:
        pass

    def summary(self, metrics: dict[str, Any]) -> None:
        pass

    def finish(self) -> None:
        pass


class NullTracker(Tracker):
    """Tracks nothing."""


class MemoryTracker(Tracker):
    """Keeps everything in memory (for tests and notebooks)."""

    def __init__(self):
        self.config: dict[str, Any] = {}
        self.history: list[tuple[int, dict[str, float]]] = []
        self.summary_: dict[str, Any] = {}
        self.finished = False

    def log_config(self, config):
        self.config.update(config)

    def log(self, metrics, step):
        self.history.append((step, dict(metrics)))

    def summary(self, metrics):
        self.summary_.update(metrics)

    def finish(self):
        self.finished = True


class WandbTracker(Tracker):
    """Logs to Weights & Biases.

    Args:
        mode: ``'offline'`` (default; never touches the network, the run is written under
            ``<dir>/wandb/offline-run-*`` and can be uploaded later with ``wandb sync``),
            ``'online'`` or ``'disabled'``.
        dir: folder that receives the ``wandb/`` run folder (the run directory).
        project, name, config: the usual :func:`wandb.init` arguments.
        run_id: reuse this run id (a resumed training run continues the same wandb run).
    """

    def __init__(self, mode: str = 'offline', dir: str | os.PathLike | None = None,
                 project: str = 'mmssl-pyg', name: str | None = None,
                 config: dict[str, Any] | None = None, run_id: str | None = None,
                 **init_kwargs):
        if mode not in WANDB_MODES:
            raise ValueError(f'wandb mode must be one of {WANDB_MODES}, got {mode!r}')
        import wandb
        if dir is not None:
            Path(dir).mkdir(parents=True, exist_ok=True)
        settings = wandb.Settings(silent=True, console='off')
        try:
            self.run = wandb.init(mode=mode, dir=None if dir is None else str(dir),
                                  project=project, name=name, config=config, id=run_id,
                                  resume='allow' if run_id else None, settings=settings,
                                  reinit='create_new', **init_kwargs)
        except Exception as err:  # noqa: BLE001 - wandb raises its own types (auth, network)
            raise TrackerError(f'Weights & Biases could not start a {mode} run '
                               f'({type(err).__name__}: {err}). Fix: check `wandb login` and '
                               f'the network, or use --wandb offline (upload later with '
                               f'`wandb sync`) or --wandb disabled') from None
        self.mode = mode

    @property
    def run_id(self) -> str | None:
        return getattr(self.run, 'id', None)

    def log_config(self, config):
        self.run.config.update(config, allow_val_change=True)

    def log(self, metrics, step):
        # commit now: a row left pending is flushed by finish(), after summary(), and its
        # values (the last epoch's val/*) would overwrite the selected epoch's in the summary
        self.run.log(dict(metrics), step=step, commit=True)

    def summary(self, metrics):
        for k, v in metrics.items():
            self.run.summary[k] = v

    def finish(self):
        self.run.finish()


class TrackerError(RuntimeError):
    """The experiment tracker cannot start (no login, no network, ...)."""


def wandb_login_found() -> bool:
    """Whether a W&B API key is configured (``WANDB_API_KEY``, an identity token file, or a
    ``.netrc`` entry for the W&B host), checked without any network access."""
    if os.environ.get('WANDB_API_KEY') or os.environ.get('WANDB_IDENTITY_TOKEN_FILE'):
        return True
    import netrc
    from urllib.parse import urlparse
    host = urlparse(os.environ.get('WANDB_BASE_URL') or 'https://api.wandb.ai').hostname
    try:
        entry = netrc.netrc(os.environ.get('NETRC') or None).authenticators(host or '')
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(entry and entry[2])


def check_wandb_mode(mode: str) -> None:
    """Raise before any work when ``mode`` is unknown, or ``'online'`` without a login."""
    if mode not in WANDB_MODES:
        raise ValueError(f'--wandb must be one of {", ".join(WANDB_MODES)}, got {mode!r}')
    if mode == 'online' and not wandb_login_found():
        raise TrackerError('--wandb online needs a Weights & Biases login, and none was found '
                           '(no WANDB_API_KEY, no .netrc entry for the W&B host). Fix: run '
                           '`wandb login` (or set WANDB_API_KEY), or use --wandb offline and '
                           'upload later with `wandb sync`')
class BudgetTracker(Tracker):
    """Forwards everything to ``inner`` and stops the trainer, as early stopping does (the best
    validation epoch so far is then tested), once ``seconds`` of wall clock have passed since
    it was created (``None``: never). Set :attr:`trainer` once the trainer is built; the epoch
    the budget stopped is in :attr:`cut_at`."""

    def __init__(self, inner: Tracker, seconds: float | None):
        self.inner, self.seconds = inner, seconds
        self.trainer = None
        self.t0 = time.perf_counter()
        self.cut_at: int | None = None

    def log_config(self, config):
        self.inner.log_config(config)

    def log(self, metrics, step):
        self.inner.log(metrics, step)
        self.check_budget(step)

    def check_budget(self, step: int) -> None:
        if self.seconds is not None and self.trainer is not None and self.cut_at is None \
                and time.perf_counter() - self.t0 > self.seconds:
            self.cut_at = step
            self.trainer.stopped_early = True  # the loop ends before the next epoch

    def summary(self, metrics):
        self.inner.summary(metrics)

    def finish(self):
        self.inner.finish()


def make_tracker(mode: str = 'offline', **kwargs) -> Tracker:
    """``NullTracker`` for ``mode='disabled'``, else a :class:`WandbTracker`."""
    if mode not in WANDB_MODES:
        raise ValueError(f'--wandb must be one of {", ".join(WANDB_MODES)}, got {mode!r}')
    if mode == 'disabled':
        return NullTracker()  # wandb is not even imported
    return WandbTracker(mode=mode, **kwargs)
