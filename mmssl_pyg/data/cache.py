r"""Processed-data caches that never run code, and fingerprints of the raw files they hold.

A processed file (``root/processed/data_*.pt``) is a :func:`torch.save` of a plain dictionary:

.. code-block:: none

    format        'mmssl-pyg-processed'
    version       CACHE_VERSION
    fingerprint   {file name: {'size', 'mtime_ns', 'sha256'}} of the raw files read
    key           {'raw_format', 'modalities', 'pre_transform'}: what else shaped the data
    data          HeteroData.to_dict() (tensors, numbers, strings, lists)

It is read with ``torch.load(weights_only=True)`` only, which unpickles nothing but tensors
and plain containers: a crafted file cannot run code, it is refused with
:class:`ProcessedCacheError` naming the file and the fix. There is no fallback to full
unpickling (PyG's loader has one, and also unpickles ``pre_transform.pt`` /
``pre_filter.pt`` unconditionally; neither is used here).

A cache is used only when the raw files still have the recorded content (SHA-256): edited raw
files are re-processed at the next load.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from ..utils.io import atomic_write, describe_load_error
from .validation import DatasetFormatError

CACHE_FORMAT = 'mmssl-pyg-processed'
CACHE_VERSION = 1
_CHUNK = 1 << 22


class ProcessedCacheError(DatasetFormatError):
    """A processed file is unreadable, unsafe or not a cache of this library."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        super().__init__(path, 'processed file', problem,
                         f'delete {Path(path).name} (it is only a cache of the raw files) or '
                         f'load with --force-reload / force_reload=True to rebuild it')

    def __reduce__(self):
        return self.__class__, (self.path, self.problem)


def file_fingerprint(path: str | os.PathLike) -> dict[str, Any]:
    """``{'size', 'mtime_ns', 'sha256'}`` of one file (the content hash decides equality)."""
    path = Path(path)
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        st = os.fstat(f.fileno())
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return {'size': int(st.st_size), 'mtime_ns': int(st.st_mtime_ns), 'sha256': h.hexdigest()}


def raw_fingerprint(raw_dir: str | os.PathLike, names: Iterable[str]) -> dict[str, dict]:
    """:func:`file_fingerprint` of each named file of ``raw_dir``."""
    raw = Path(raw_dir)
    return {name: file_fingerprint(raw / name) for name in sorted(names)}


def fingerprint_digest(fingerprint: dict[str, dict]) -> str:
    """One SHA-256 over the names, sizes and content hashes (not the times or the folder), so
    a copy of the same files in another place has the same digest."""
    h = hashlib.sha256()
    for name in sorted(fingerprint):
        fp = fingerprint[name]
        h.update(f'{name}\0{fp["size"]}\0{fp["sha256"]}\n'.encode())
    return h.hexdigest()


def changed_files(old: dict[str, dict], new: dict[str, dict]) -> list[str]:
    """Names whose content differs between two fingerprints (or that only one has)."""
    names = sorted(set(old) | set(new))
    return [n for n in names if (old.get(n) or {}).get('sha256') != (new.get(n) or {}).get(
        'sha256') or (old.get(n) or {}).get('size') != (new.get(n) or {}).get('size')]


def save_processed(path: str | os.PathLike, data: dict[str, Any],
                   fingerprint: dict[str, dict], key: dict[str, Any]) -> Path:
    """Write a processed cache atomically, then check that it loads with
    ``weights_only=True`` (a ``pre_transform`` that stores other objects is refused)."""
    payload = {'format': CACHE_FORMAT, 'version': CACHE_VERSION, 'fingerprint': fingerprint,
               'key': key, 'data': data}
    path = atomic_write(path, lambda f: torch.save(payload, f))
    try:
        load_processed(path)
    except ProcessedCacheError as err:
        os.unlink(path)
        raise DatasetFormatError(
            path, 'pre_transform', f'the processed data holds objects that cannot be stored '
            f'safely ({err.problem})', 'make pre_transform return tensors, numbers, strings, '
            'lists and dicts only') from err
    return path


def load_processed(path: str | os.PathLike) -> dict[str, Any] | None:
    r"""Read a processed cache with ``torch.load(weights_only=True)``.

    Returns:
        The cache dictionary, or :obj:`None` for a file that loads safely but is not a cache
        of the current version (e.g. one written by PyG's default saver): rebuild it.

    Raises:
        ProcessedCacheError: for an empty, truncated or unsafe file (anything that
            ``weights_only`` refuses); nothing in the file is executed.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as err:
        raise ProcessedCacheError(path, f'cannot read it ({err.strerror or err})') from err
    if size == 0:
        raise ProcessedCacheError(path, 'the file is empty (an interrupted write?)')
    try:
        obj = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure is refused, never retried unsafely
        raise ProcessedCacheError(
            path, f'not a safe processed cache ({describe_load_error(err)})') from None
    if not (isinstance(obj, dict) and obj.get('format') == CACHE_FORMAT
            and obj.get('version') == CACHE_VERSION and isinstance(obj.get('data'), dict)
            and isinstance(obj.get('fingerprint'), dict)):
        return None
    return obj
