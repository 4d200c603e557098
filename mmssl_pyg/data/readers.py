r"""Readers for the raw files of the MMSSL, LATTICE and DiffMM releases.

Three layouts of the same data exist in the wild; all of them hold 0-based user and item ids:

* **JSON** (MMSSL / LATTICE): ``train.json``, ``val.json``, ``test.json``, each a JSON object
  mapping a user id string to a list of item ids, e.g. ``{"0": [885, 1387], "1": [490]}``.
* **train_mat** (MMSSL): a pickled ``scipy.sparse`` ``users x items`` matrix named
  ``train_mat`` that replaces ``train.json`` (``val.json`` and ``test.json`` stay JSON).
* **pickled matrices** (DiffMM): ``trnMat.pkl``, ``valMat.pkl``, ``tstMat.pkl``, one pickled
  ``scipy.sparse`` ``users x items`` matrix per split.

Item features are ``<modality>_feat.npy`` files, row ``i`` = item ``i``. Every reader returns
NumPy arrays and raises :class:`~mmssl_pyg.data.validation.DatasetFormatError` naming the file,
the field and the fix when the content is not what the format promises.
"""
from __future__ import annotations

import json
import pickle
import re
import warnings
from dataclasses import dataclass
from itertools import chain
from os import PathLike
from pathlib import Path

import numpy as np

from .validation import DatasetFormatError, check_features

SPLITS = ('train', 'val', 'test')
#: Split file names of each raw layout.
RAW_FORMATS: dict[str, dict[str, str]] = {
    'json': {'train': 'train.json', 'val': 'val.json', 'test': 'test.json'},
    'train_mat': {'train': 'train_mat', 'val': 'val.json', 'test': 'test.json'},
    'pkl': {'train': 'trnMat.pkl', 'val': 'valMat.pkl', 'test': 'tstMat.pkl'},
}
FEATURE_FILE = '{}_feat.npy'

_JSON_FIX = 'write the split as a JSON object of user id -> list of item ids, e.g. {"0": [3, 5]}'


@dataclass
class SplitPairs:
    r"""The ``(user, item)`` pairs read from one raw split file.

    Attributes:
        path (Path): the file read.
        users, items (np.ndarray): ``int64`` arrays of equal length, one entry per pair, in
            file order (duplicates kept).
        shape (tuple[int, int] | None): ``(num_users, num_items)`` declared by a sparse
            matrix file; ``None`` for JSON.
    """
    path: Path
    users: np.ndarray
    items: np.ndarray
    shape: tuple[int, int] | None = None

    @property
    def num_pairs(self) -> int:
        return int(self.users.size)


class _JSONObject(list):
    """A JSON object kept as its ``(key, value)`` pairs, so duplicate keys are not lost."""


def _describe(value) -> str:
    if isinstance(value, _JSONObject):
        text, kind = json.dumps(dict(value)), 'object'
    else:
        text, kind = json.dumps(value), {list: 'list', str: 'string', bool: 'boolean',
                                         int: 'integer', float: 'number',
                                         type(None): 'null'}.get(type(value), 'value')
    if len(text) > 60:
        text = text[:57] + '...'
    return f'{text} (a JSON {kind})'


def _open_error(path: Path, err: OSError, what: str, fix: str) -> DatasetFormatError:
    if isinstance(err, FileNotFoundError):
        return DatasetFormatError(path, 'file', f'{what} not found', fix)
    return DatasetFormatError(path, 'file', f'cannot read {what} ({err.strerror or err})',
                              'check that the path is a readable file (permissions, not a '
                              'folder, not a broken link)')


def read_json_split(path: str | PathLike) -> SplitPairs:
    r"""Read one MMSSL/LATTICE split file (``{"user": [item, ...], ...}``).

    Users whose list is empty contribute nothing; repeated user keys are all kept (and
    reported with a warning).

    Args:
        path (str or PathLike): the ``.json`` file.

    Returns:
        SplitPairs: the pairs, users repeated once per item, in file order.

    Example:
        >>> pairs = read_json_split('datasets/tiktok/raw/train.json')
        >>> pairs.num_pairs
        59541
    """
    path = Path(path)
    try:
        with open(path, 'rb') as f:
            obj = json.load(f, object_pairs_hook=_JSONObject)
    except OSError as err:
        raise _open_error(path, err, 'split file',
                          f'put {path.name} next to the other raw files') from err
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        raise DatasetFormatError(path, 'JSON', f'not valid JSON ({err})', _JSON_FIX) from err
    except RecursionError:
        raise DatasetFormatError(path, 'JSON', 'nested too deeply to be a split (lists inside '
                                 'lists, thousands of levels)', _JSON_FIX) from None
    if not isinstance(obj, _JSONObject):
        raise DatasetFormatError(
            path, 'top level', 'expected a JSON object of user id -> list of item ids, got '
            + _describe(obj), _JSON_FIX)

    keys = [k for k, _ in obj]
    values = [v for _, v in obj]
    bad = [k for k in keys if not (k.isascii() and k.isdigit())]
    if bad:
        raise DatasetFormatError(
            path, f'user "{bad[0]}"',
            f'user id {bad[0]!r} is not a non-negative integer ({len(bad)} such key(s))',
            'use 0-based integer user ids written as strings, e.g. {"17": [3, 5]}')
    try:
        user_ids = np.fromiter(map(int, keys), dtype=np.int64, count=len(keys))
    except OverflowError as err:
        raise DatasetFormatError(path, 'user ids', f'a user id does not fit in 64 bits ({err})',
                                 'use 0-based contiguous user ids') from err
    n = len(keys) - int(np.unique(user_ids).size)
    if n:
        warnings.warn(f'{path}: {n} user id(s) appear more than once as keys; the item lists '
                      'of every occurrence are kept', UserWarning, stacklevel=2)

    if any(type(v) is not list for v in values):
        k = next(k for k, v in enumerate(values) if type(v) is not list)
        raise DatasetFormatError(path, f'user "{keys[k]}"',
                                 f'expected a list of item ids, got {_describe(values[k])}',
                                 'map each user id to a JSON list of integers, e.g. '
                                 '"17": [3, 5]')
    lengths = np.fromiter(map(len, values), dtype=np.int64, count=len(values))
    flat = list(chain.from_iterable(values))
    if not set(map(type, flat)) <= {int}:  # rejects bool, float, str, null, nesting
        j = next(j for j, x in enumerate(flat) if type(x) is not int)
        u = int(np.searchsorted(np.cumsum(lengths), j, side='right'))
        raise DatasetFormatError(path, f'user "{keys[u]}"',
                                 f'item id {_describe(flat[j])} is not an integer',
                                 'write item ids as JSON integers, e.g. "17": [3, 5]')
    try:
        items = np.array(flat, dtype=np.int64)
    except OverflowError as err:
        raise DatasetFormatError(path, 'item ids', f'an item id does not fit in 64 bits ({err})',
                                 'use 0-based contiguous item ids') from err
    users = np.repeat(user_ids, lengths)
    assert users.size == items.size == int(lengths.sum())
    return SplitPairs(path, users, items)


class _SparseMatrixUnpickler(pickle.Unpickler):
    """Unpickle only ``scipy.sparse`` matrices and the NumPy arrays inside them.

    Pickles can run arbitrary code when loaded; the release files only ever need these names.
    """

    _numpy_modules = {'numpy', 'numpy.core.multiarray', 'numpy._core.multiarray',
                      'numpy.core.numeric', 'numpy._core.numeric'}
    _numpy_names = {'_reconstruct', 'ndarray', 'dtype', 'scalar', '_frombuffer'}
    _sparse_name = re.compile(r'^(coo|csr|csc|lil|dok|bsr|dia)_(matrix|array)$')
    # how protocols 0-2 rebuild objects and bytes; a pickle of those protocols names the
    # Python 2 modules (copy_reg, __builtin__), which the base class maps to Python 3's
    _rebuild_names = {('copyreg', '_reconstructor'), ('copy_reg', '_reconstructor'),
                      ('builtins', 'object'), ('__builtin__', 'object'), ('_codecs', 'encode')}

    def find_class(self, module: str, name: str):
        allowed = (
            (module.startswith('scipy.sparse') and self._sparse_name.match(name))
            or (module in self._numpy_modules and name in self._numpy_names)
            or (module, name) in self._rebuild_names)
        if not allowed:
            raise pickle.UnpicklingError(f'refusing to load {module}.{name}')
        return super().find_class(module, name)


def read_sparse_matrix(path: str | PathLike) -> SplitPairs:
    r"""Read a pickled ``scipy.sparse`` ``users x items`` matrix (``train_mat``, ``trnMat.pkl``).

    Every stored non-zero entry is one interaction (the value itself is ignored); repeated
    coordinates of an uncoalesced matrix are kept as repeated pairs. Stored explicit zeros are
    not interactions and are skipped with a warning that gives their number. Only
    ``scipy.sparse`` matrices are unpickled: any other object in the file is refused.

    Args:
        path (str or PathLike): the pickle file.

    Returns:
        SplitPairs: the pairs in row-major order and the matrix ``shape``.
    """
    import scipy.sparse as sp

    path = Path(path)
    fix = ('save the split as pickle.dump(scipy.sparse.coo_matrix((ones, (users, items)), '
           'shape=(num_users, num_items)), f)')
    try:
        with open(path, 'rb') as f:
            obj = _SparseMatrixUnpickler(f).load()
    except OSError as err:
        raise _open_error(path, err, 'matrix file',
                          f'put {path.name} next to the other raw files') from err
    except Exception as err:  # a damaged pickle can fail in many ways
        raise DatasetFormatError(path, 'pickle', f'not a pickled scipy.sparse matrix ({err})',
                                 fix) from err
    if not sp.issparse(obj) or obj.ndim != 2:
        raise DatasetFormatError(path, 'pickle',
                                 f'expected a 2-D scipy.sparse matrix, got {type(obj).__name__}',
                                 fix)
    try:  # a damaged matrix (indptr / indices out of step) must not become wrong pairs
        if hasattr(obj, 'check_format'):
            obj.check_format(full_check=True)
        coo = obj.tocoo()
        rows, cols = np.asarray(coo.row), np.asarray(coo.col)
        if not (rows.shape == cols.shape == np.asarray(coo.data).shape):
            raise ValueError('row, col and data arrays differ in length')
        if rows.size and (rows.min() < 0 or cols.min() < 0 or rows.max() >= coo.shape[0]
                          or cols.max() >= coo.shape[1]):
            raise ValueError(f'an index lies outside the declared shape {coo.shape}')
    except (ValueError, IndexError, TypeError) as err:
        raise DatasetFormatError(path, 'matrix', f'the sparse matrix is inconsistent ({err})',
                                 'rebuild the file from the interactions; ' + fix) from err
    data = np.asarray(coo.data)
    keep = data != 0
    if not keep.all():
        warnings.warn(f'{path}: {int((~keep).sum())} stored entries are explicit zeros and are '
                      'not counted as interactions', UserWarning, stacklevel=2)
    users = np.asarray(coo.row)[keep].astype(np.int64)
    items = np.asarray(coo.col)[keep].astype(np.int64)
    order = np.lexsort((items, users))  # row-major, stable: duplicates stay
    shape = (int(coo.shape[0]), int(coo.shape[1]))
    return SplitPairs(path, users[order], items[order], shape)


def read_features(path: str | PathLike) -> np.ndarray:
    r"""Read a ``<modality>_feat.npy`` file as a ``float32`` ``[num_items, dim]`` array.

    ``float16`` (TikTok) and ``float64`` files are cast to ``float32``. NaN or infinite values
    are an error, never replaced.

    Args:
        path (str or PathLike): the ``.npy`` file.
    """
    path = Path(path)
    try:
        arr = np.load(path, allow_pickle=False)
    except OSError as err:
        raise _open_error(path, err, 'feature file',
                          f'put {path.name} (one row per item) next to the split files, or '
                          'leave that modality out with modalities=[...]') from err
    except EOFError as err:  # 0 bytes, or cut off inside the header
        raise DatasetFormatError(path, 'format', f'empty or truncated ({path.stat().st_size} '
                                 f'bytes; {err})', 'write the file again with np.save(path, '
                                 'feat.astype(np.float32))') from err
    except ValueError as err:  # object arrays, bad header
        raise DatasetFormatError(path, 'format', f'not a readable .npy array ({err})',
                                 'save the features with np.save(path, '
                                 'feat.astype(np.float32))') from err
    if not isinstance(arr, np.ndarray):  # an .npz archive under a .npy name
        raise DatasetFormatError(path, 'format', 'an .npz archive, not a single .npy array',
                                 'save one array per modality with np.save')
    check_features(path, arr)
    with np.errstate(over='ignore'):  # overflow to inf is reported just below
        feat = np.ascontiguousarray(arr, dtype=np.float32)
    if arr.dtype.kind == 'f' and arr.dtype.itemsize > 4 or arr.dtype.kind in 'iu':
        check_features(path, feat)  # values beyond the float32 range became inf
    return feat


def modality_from_file(name: str) -> str | None:
    """``'image_feat.npy'`` -> ``'image'``; ``None`` for other file names."""
    suffix = FEATURE_FILE.format('')
    if name.endswith(suffix) and len(name) > len(suffix):
        return name[: -len(suffix)]
    return None
