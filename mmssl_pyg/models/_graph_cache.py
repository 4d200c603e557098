"""A small cache for frozen item-item graphs (kNN graphs built from item features).

A frozen graph depends only on the feature matrix, ``k`` and the kind of graph, so it is keyed
by a hash of the feature bytes, their shape and dtype, ``k`` and ``kind``. Entries live in an
in-process dictionary and, when a directory is given (argument ``cache_dir`` or the
``MMSSL_PYG_GRAPH_CACHE`` environment variable), in ``<dir>/<kind>-k<k>-<hash>.pt`` so that a
later run skips the blockwise top-k pass.
"""
from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

#: Environment variable naming a directory for the on-disk cache.
CACHE_ENV = 'MMSSL_PYG_GRAPH_CACHE'
#: In-memory entries kept (least recently used dropped first).
MAX_ENTRIES = 32

_memory: OrderedDict[str, dict[str, Tensor]] = OrderedDict()
#: Counters, for tests and logging: ``hits`` (memory or disk), ``disk_hits``, ``builds``.
stats = {'hits': 0, 'disk_hits': 0, 'builds': 0}


def feature_key(x: Tensor, k: int, kind: str) -> str:
    """``<kind>-k<k>-<sha1 of shape, dtype and bytes>`` for the feature matrix ``x``."""
    h = hashlib.sha1()
    h.update(f'{tuple(x.shape)}|{x.dtype}|{k}|{kind}'.encode())
    h.update(x.detach().contiguous().cpu().numpy().tobytes())
    safe_kind = ''.join(c if c.isalnum() or c in '-_' else '_' for c in kind)
    return f'{safe_kind}-k{k}-{h.hexdigest()[:20]}'


def cached_graph(x: Tensor, k: int, kind: str, build: Callable[[], dict[str, Tensor]],
                 cache_dir: str | os.PathLike | None = None) -> dict[str, Tensor]:
    """Return ``build()``'s tensors for ``(x, k, kind)``, building them at most once.

    Args:
        x: the item features the graph is built from (only hashed here).
        k: neighbours per item.
        kind: a name for the construction (e.g. ``'cosine-knn+self'``); part of the key.
        build: builds the graph, returning a dict of tensors.
        cache_dir: directory of the on-disk cache (default ``$MMSSL_PYG_GRAPH_CACHE``; no disk
            cache when neither is set).

    Returns:
        The dict of tensors, on ``x``'s device.
    """
    key = feature_key(x, k, kind)
    if key in _memory:
        stats['hits'] += 1
        _memory.move_to_end(key)
        return {n: t.to(x.device) for n, t in _memory[key].items()}
    cache_dir = cache_dir if cache_dir is not None else os.environ.get(CACHE_ENV)
    path = Path(cache_dir) / f'{key}.pt' if cache_dir else None
    if path is not None and path.is_file():
        try:  # weights_only: a crafted cache file cannot run code
            graph = torch.load(path, map_location='cpu', weights_only=True)
        except Exception as err:  # noqa: BLE001 - reported with the file and the fix
            from ..utils.io import describe_load_error
            problem = describe_load_error(err)
        else:  # a complete file of tensors, but not the dict this cache writes
            problem = (None if isinstance(graph, dict) else
                       f'it holds a {type(graph).__name__}, not a dict of tensors')
        if problem is not None:
            raise ValueError(f'graph cache file {str(path)!r} cannot be used ({problem}). '
                             f'Fix: delete it (it is rebuilt from the item features)')
        stats['hits'] += 1
        stats['disk_hits'] += 1
    else:
        graph = {n: t.detach().cpu() for n, t in build().items()}
        stats['builds'] += 1
        if path is not None:
            from ..utils.io import atomic_write
            # temporary file, fsync, rename: concurrent runs never read a partial file, and a
            # failed write (full disk) leaves no partial or temporary file behind
            atomic_write(path, lambda f: torch.save(graph, f))
    _memory[key] = graph
    while len(_memory) > MAX_ENTRIES:
        _memory.popitem(last=False)
    return {n: t.to(x.device) for n, t in graph.items()}


def clear_memory_cache() -> None:
    """Drop the in-memory entries and reset :data:`stats` (the disk cache is kept)."""
    _memory.clear()
    for name in stats:
        stats[name] = 0
