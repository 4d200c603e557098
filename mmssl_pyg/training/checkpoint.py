"""Checkpoints: atomic writes and the random-number state a resumed run needs."""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..utils.io import atomic_write, describe_load_error

BEST, LAST = 'best.pt', 'last.pt'


class CheckpointError(ValueError, RuntimeError):
    """A checkpoint file is missing, empty, damaged, unsafe or not one of this library."""


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``state`` with :func:`torch.save` atomically: to a temporary file in the same
    folder, flushed to disk, then moved over ``path`` with :func:`os.replace`, so ``path`` is
    always either the previous complete checkpoint or the new one, even if the process dies or
    the disk fills up (:class:`~mmssl_pyg.utils.io.OutputError` then names the file)."""
    return atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | os.PathLike, map_location='cpu') -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only``: tensors and plain
    Python containers only, so loading never runs code from the file).

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        CheckpointError: when it is a folder, empty, damaged, holds other objects, or is not a
            dictionary; the message names the file and the fix.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f'checkpoint {str(path)!r} does not exist')
    fix = ('use the run\'s other checkpoint (best.pt / last.pt) or train again; only files '
           'written by mmssl-pyg train are read')
    if not path.is_file():
        raise CheckpointError(f'checkpoint {str(path)!r} is not a file. Fix: give best.pt, '
                              f'last.pt or the run folder')
    if path.stat().st_size == 0:
        raise CheckpointError(f'checkpoint {str(path)!r} is empty (0 bytes; an interrupted copy '
                              f'or a full disk?). Fix: {fix}')
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - never retried without weights_only
        raise CheckpointError(f'cannot read checkpoint {str(path)!r}: '
                              f'{describe_load_error(err)}. Fix: {fix}') from None
    if not isinstance(state, dict):
        raise CheckpointError(f'checkpoint {str(path)!r} holds a {type(state).__name__}, not '
                              f'the dictionary mmssl-pyg writes. Fix: {fix}')
    return state


def rng_state() -> dict[str, Any]:
    """torch (CPU and every CUDA device), numpy and Python ``random`` states, as tensors and
    plain containers (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        'torch': torch.get_rng_state(),
        'numpy': {'kind': kind, 'keys': torch.from_numpy(keys.astype(np.int64)), 'pos': int(pos),
                  'has_gauss': int(has_gauss), 'cached_gaussian': float(cached)},
        'python': _to_lists(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state['torch'])
    n = state['numpy']
    np.random.set_state((n['kind'], n['keys'].numpy().astype(np.uint32), n['pos'],
                         n['has_gauss'], n['cached_gaussian']))
    random.setstate(_to_tuples(state['python']))
    if 'cuda' in state and torch.cuda.is_available():
        cuda = state['cuda'][:torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(cuda)


def _to_lists(x):
    return [_to_lists(v) for v in x] if isinstance(x, (tuple, list)) else x


def _to_tuples(x):
    return tuple(_to_tuples(v) for v in x) if isinstance(x, (tuple, list)) else x
