r"""Checks on raw recommendation data, with errors that say what to fix.

Every problem found in a raw file raises :class:`DatasetFormatError` (a :class:`ValueError`)
whose message names the file, the field and the value at fault, and ends with the fix.
Missing raw files raise :class:`DatasetNotFoundError`, which is both a
:class:`DatasetFormatError` and a :class:`FileNotFoundError`.

Suspicious but usable data (duplicate pairs inside a split, pairs shared between the training
split and a held-out split) is kept as it is and reported with :func:`warnings.warn`, with the
counts, so that nothing is dropped silently.
"""
from __future__ import annotations

import warnings
from os import PathLike

import numpy as np


class DatasetFormatError(ValueError):
    r"""A raw dataset file is missing, unreadable or malformed.

    Attributes:
        path (str): the file at fault (or the folder, for problems across files).
        field (str): the part of the file at fault, e.g. ``'user "17"'`` or ``'rows'``.
        problem (str): what is wrong, with the offending value.
        fix (str): what to do about it.
    """

    def __init__(self, path: str | PathLike, field: str, problem: str, fix: str) -> None:
        self.path, self.field, self.problem, self.fix = str(path), field, problem, fix
        super().__init__(f'{self.path} [{field}]: {problem}. Fix: {fix}')

    def __reduce__(self):
        return self.__class__, (self.path, self.field, self.problem, self.fix)


class DatasetNotFoundError(DatasetFormatError, FileNotFoundError):
    r"""Raw files of a dataset are not on disk (and cannot be downloaded).

    The message lists every expected file, its expected shape, and where to obtain it.

    Attributes:
        missing (list[str]): names of the missing files.
        summary (str): the same in one line (what is missing, where, and the fix): what the
            command line prints.
    """

    def __init__(self, path: str | PathLike, message: str,
                 missing: list[str] | None = None, summary: str | None = None) -> None:
        self.path, self.field, self.problem, self.fix = str(path), 'raw files', message, ''
        self.missing = list(missing or [])
        self.summary = summary if summary is not None else message.splitlines()[0]
        ValueError.__init__(self, message)

    def __reduce__(self):
        return self.__class__, (self.path, self.problem, self.missing, self.summary)

    def __str__(self) -> str:
        return self.problem


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def check_nonempty(path, split: str, num_pairs: int) -> None:
    """Raise when a split holds no interaction at all."""
    if num_pairs == 0:
        raise DatasetFormatError(
            path, 'interactions', f'the {split} split has no (user, item) pairs',
            f'put at least one interaction in the {split} split (every split is needed: '
            'train for fitting, val for early stopping, test for the final report)')


def check_id_range(path, users: np.ndarray, items: np.ndarray, num_users: int,
                   num_items: int, items_from: str, users_from: str | None = None) -> None:
    """Raise when a user or item id is negative or not below its node count.

    Args:
        path: the file the ids were read from.
        users, items: the ``(user, item)`` pairs of the file.
        num_users, num_items: node counts.
        items_from: where ``num_items`` comes from (named in the message), e.g.
            ``'the rows of image_feat.npy'``.
        users_from: where ``num_users`` comes from, when it is fixed by another file.
    """
    bad = (items < 0) | (items >= num_items)
    if bad.any():
        k = _first(bad)
        raise DatasetFormatError(
            path, f'user "{int(users[k])}"',
            f'item id {int(items[k])} is outside [0, {num_items}) ({int(bad.sum())} pair(s) '
            f'out of range; {num_items} items per {items_from})',
            'item ids must be 0-based row numbers of the feature files; re-index the items '
            'or supply feature files with a row for every item')
    bad = (users < 0) | (users >= num_users)
    if bad.any():
        k = _first(bad)
        raise DatasetFormatError(
            path, f'user "{int(users[k])}"',
            f'user id {int(users[k])} is outside [0, {num_users}) ({int(bad.sum())} pair(s) '
            f'out of range; {num_users} users per {users_from or "the largest user id"})',
            'user ids must be 0-based and below the user count of the interaction matrix')


#: An id range may hold this many unused ids (or as many as used ones, if more) before it is
#: an error; fewer unused ids are reported with a warning.
MAX_UNUSED_IDS = 1000


def check_id_span(folder, kind: str, count: int, used: np.ndarray, count_from: str,
                  declared_by: str | None = None) -> int:
    """Check that ``count`` users / items are mostly used by the interactions.

    Ids are row numbers: ``count`` nodes are created whether they interact or not. More unused
    ids than :data:`MAX_UNUSED_IDS` and than used ones (a stray id of 10**7, a matrix that
    declares 10**12 rows) raises :class:`DatasetFormatError` suggesting a remapping; fewer are
    kept and reported with a warning. Feature rows without interactions only warn: the rows
    exist.

    Args:
        folder: the raw folder (named in messages).
        kind: ``'user'`` or ``'item'``.
        count: the node count.
        used: every id of that kind in all splits.
        count_from: where ``count`` comes from, e.g. ``'the largest item id'``.
        declared_by: ``'matrix'`` or ``'features'`` when ``count`` is declared by a file (a
            matrix shape, the feature rows); :obj:`None` when it is the largest id plus one.

    Returns:
        The number of unused ids.
    """
    distinct = int(np.unique(used).size)
    unused = count - distinct
    if unused <= 0:
        return 0
    declared, features = declared_by is not None, declared_by == 'features'
    if unused > max(distinct, MAX_UNUSED_IDS) and not features:
        largest = int(used.max()) if used.size else -1
        source = (f'{count_from} declares {count:,} {kind}s' if declared else
                  f'the largest {kind} id is {largest:,}, which makes {count:,} {kind}s')
        raise DatasetFormatError(
            folder, f'{kind} ids', f'{source} but only {distinct:,} distinct {kind} ids appear '
            f'in the splits ({unused:,} {kind}s would have no interaction and would still get '
            f'an embedding)',
            f'remap the {kind} ids to 0..{distinct - 1} (e.g. ids = np.unique(ids, '
            f'return_inverse=True)[1], the same mapping in every split and feature file) or '
            f'remove the stray id' + ('' if not declared else '; save the matrices with shape '
                                      '(num_users, num_items) of the ids actually used'))
    warnings.warn(
        f'{folder}: {unused:,} of the {count:,} {kind}s (counted from {count_from}) appear in '
        f'no split; they are kept as {kind}s without interactions' + (
            ' (their feature rows are loaded and they are ranked at evaluation)'
            if features else '; remap the ids if that is not intended'),
        UserWarning, stacklevel=3)
    return unused


def check_features(path, feat: np.ndarray) -> None:
    """Raise when a feature matrix is not 2-D, not numeric, or holds NaN / inf."""
    if feat.ndim != 2:
        raise DatasetFormatError(
            path, 'shape', f'expected a 2-D array [num_items, dim], got shape {feat.shape}',
            'save one row per item, e.g. np.save(path, feat.reshape(num_items, -1))')
    if feat.shape[1] == 0 or feat.shape[0] == 0:
        raise DatasetFormatError(
            path, 'shape', f'the feature matrix has shape {feat.shape}: no '
            f'{"column" if feat.shape[1] == 0 else "row"}, so it holds no feature',
            'save one row of at least one value per item, or delete the file to leave that '
            'modality out')
    if feat.dtype.kind not in 'fiu':
        raise DatasetFormatError(
            path, 'dtype', f'expected a numeric array, got dtype {feat.dtype}',
            'save the features as float32 (np.save(path, feat.astype(np.float32)))')
    if feat.dtype.kind == 'f':
        bad_rows = ~np.isfinite(feat).all(axis=1)
        if bad_rows.any():
            k = _first(bad_rows)
            raise DatasetFormatError(
                path, 'values',
                f'{int(bad_rows.sum())} of {feat.shape[0]} rows hold NaN or infinite values '
                f'(first: row {k}, item {k})',
                're-extract the features of those items, or replace them explicitly '
                '(e.g. by the mean row) before saving; they are never filled in here')


def check_feature_rows(rows: dict[str, int], folder) -> int:
    """Return the common row count of all feature files; raise when they disagree."""
    counts = sorted(set(rows.values()))
    if len(counts) > 1:
        listing = ', '.join(f'{name}: {n} rows' for name, n in rows.items())
        raise DatasetFormatError(
            folder, 'rows', f'feature files disagree on the number of items ({listing})',
            'every <modality>_feat.npy needs exactly one row per item (row i = item i); '
            'regenerate the short ones or leave that modality out with modalities=[...]')
    return counts[0]


def pair_keys(users: np.ndarray, items: np.ndarray, num_items: int) -> np.ndarray:
    """Encode ``(user, item)`` pairs as one int64 key each (no dense matrix)."""
    return users.astype(np.int64) * int(num_items) + items.astype(np.int64)


def count_duplicates(keys: np.ndarray) -> int:
    """Number of pairs that repeat an earlier pair of the same split."""
    return int(keys.size - np.unique(keys).size)


def count_overlap(keys_a: np.ndarray, keys_b: np.ndarray) -> int:
    """Number of distinct pairs present in both splits."""
    return int(np.intersect1d(keys_a, keys_b).size)


def report_duplicates_and_overlaps(pairs: dict[str, tuple[np.ndarray, np.ndarray]],
                                   num_items: int, files: dict[str, str],
                                   stacklevel: int = 2) -> dict[str, int]:
    """Warn about repeated pairs within a split and pairs shared between splits.

    Nothing is removed: the counts are reported so that the user can decide.

    Args:
        pairs: ``{split: (users, items)}``.
        num_items: item count (to encode pairs).
        files: ``{split: file name}`` used in the messages.

    Returns:
        ``{'duplicates_<split>': n, 'overlap_<a>_<b>': n}`` for every count.
    """
    keys = {s: pair_keys(u, i, num_items) for s, (u, i) in pairs.items()}
    counts: dict[str, int] = {}
    for split, k in keys.items():
        n = count_duplicates(k)
        counts[f'duplicates_{split}'] = n
        if n:
            warnings.warn(
                f'{files[split]}: {n} duplicate (user, item) pair(s) among {k.size} in the '
                f'{split} split; they are kept (deduplicate the raw file if unintended)',
                UserWarning, stacklevel=stacklevel)
    unique = {s: np.unique(k) for s, k in keys.items()}
    for a, b in (('train', 'val'), ('train', 'test'), ('val', 'test')):
        if a not in unique or b not in unique:
            continue
        n = count_overlap(unique[a], unique[b])
        counts[f'overlap_{a}_{b}'] = n
        if n:
            warnings.warn(
                f'{files[a]} and {files[b]}: {n} (user, item) pair(s) appear in both the {a} '
                f'and the {b} split ({unique[b].size} distinct {b} pairs); they are kept, but '
                f'an evaluator that excludes {a} items can never retrieve them',
                UserWarning, stacklevel=stacklevel)
    return counts
