"""Run folders and the identity of a run's data.

What a run folder holds (:data:`RUN_FILES`), reading its ``config.yaml`` back
(:func:`read_run_config`), the checks before a run writes into a folder or resumes one, which
trainer options may change on resume (:data:`RESUMABLE`), and the comparison of a run's
recorded data with the data found now (:func:`check_same_data`). The runs themselves are in
:mod:`mmssl_pyg.training.run`.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch
import yaml

from ..utils.yamlio import load_yaml
from .checkpoint import BEST, LAST, CheckpointError, load_checkpoint
from .options import RESUMABLE, ConfigError

RUN_CONFIG = 'config.yaml'
METRICS = 'metrics.json'
DISTRIBUTED = 'distributed.json'




#: Files of a run folder: a new run refuses a folder holding any of them (unless forced).
RUN_FILES = (LAST, BEST, METRICS, RUN_CONFIG, DISTRIBUTED)


class DataMismatchError(ValueError):
    """A run or checkpoint was made on other data than the data found now."""


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


def read_run_config(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The ``config.yaml`` of a run folder, checked to hold what ``--resume`` needs."""
    path = Path(run_dir) / RUN_CONFIG
    if not path.is_file():
        raise FileNotFoundError(f'cannot resume: {path} does not exist (is {run_dir} a run '
                                f'folder written by mmssl-pyg train?)')
    try:
        saved = load_yaml(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as err:
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


def resolve_checkpoint(checkpoint: str | os.PathLike) -> Path:
    """A checkpoint file, or a run folder (its ``best.pt``: the epoch selected on validation).

    A run folder without ``best.pt`` is refused rather than silently read from ``last.pt``
    (the last epoch, not the selected one): name ``last.pt`` to use it."""
    if str(checkpoint).strip() == '':
        raise FileNotFoundError('the checkpoint argument is empty. Fix: give a run folder or a '
                                '.pt file')
    path = Path(checkpoint)
    if path.is_dir():
        if (path / BEST).exists():
            return path / BEST
        if (path / LAST).exists():
            raise FileNotFoundError(
                f'run folder {str(path)!r} has no {BEST} (no epoch was selected on validation '
                f'yet), only {LAST}. Fix: pass {str(path / LAST)!r} to use the last epoch, or '
                f'finish the run with mmssl-pyg train --resume --run-dir {str(path)!r}')
        raise FileNotFoundError(f'run folder {str(path)!r} holds neither {BEST} nor {LAST}. '
                                f'Fix: give a run folder written by mmssl-pyg train, or a .pt '
                                f'file')
    return path
