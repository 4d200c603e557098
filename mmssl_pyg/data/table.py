r"""Tables of :func:`~mmssl_pyg.data.builder.build_dataset`: reading a CSV / TSV / Parquet
file (or an in-memory mapping) into a :class:`Table`, parsing its id, number and timestamp
columns, and the steps on interaction codes: the k-core filter and the per-user split.
"""
from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np

from .validation import DatasetFormatError

SPLIT_MODES = ('random', 'temporal')
PARQUET_SUFFIXES = ('.parquet', '.pq')
TAB_SUFFIXES = ('.tsv', '.tab')


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------

@dataclass
class Table:
    r"""Columns of a table, every value a string (``''`` when missing).

    Args:
        columns (dict[str, list[str]]): column name -> values, all of one length.
        source (str): the file (or a description) named in error messages.
        kind (str, optional): ``'csv'`` (errors name file lines: row ``k`` is line ``k + 2``),
            ``'parquet'`` or ``'memory'`` (errors name 0-based rows). (default: ``'memory'``)
        header (list[str], optional): every column of the file, also those not read (named
            when a column is missing). (default: :obj:`None`, the keys of :obj:`columns`)
    """
    columns: dict[str, list[str]]
    source: str = '<table>'
    kind: str = 'memory'
    header: list[str] | None = None

    def __post_init__(self) -> None:
        lengths = {name: len(v) for name, v in self.columns.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f'{self.source}: columns have different lengths {lengths}')

    @classmethod
    def from_columns(cls, columns: Mapping[str, Sequence], source: str = '<table>') -> Table:
        """A table from any sequences (``None`` and NaN become ``''``, others ``str()``)."""
        return cls({str(k): [_as_text(x) for x in v] for k, v in columns.items()}, source)

    @property
    def num_rows(self) -> int:
        return len(next(iter(self.columns.values()), []))

    def where(self, row: int) -> str:
        """Human position of a 0-based data row (a file line for CSV)."""
        return f'line {row + 2}' if self.kind == 'csv' else f'row {row}'

    def column(self, name: str, option: str) -> list[str]:
        """The values of column :obj:`name`; an error naming :obj:`option` when it is absent."""
        if name not in self.columns:
            header = self.header if self.header is not None else list(self.columns)
            have = ', '.join(repr(c) for c in header) or 'none'
            hint = (' (one column only: is the separator right? pass --sep / sep=)'
                    if len(header) == 1 and self.kind == 'csv' else '')
            raise DatasetFormatError(
                self.source, f'column "{name}"', f'no such column; the columns are {have}{hint}',
                f'name the right column with {option}')
        return self.columns[name]


def _as_text(x) -> str:
    if x is None or (isinstance(x, float) and x != x):
        return ''
    return str(x)


def read_table(path: str | PathLike, columns: Sequence[str] | None = None,
               sep: str | None = None) -> Table:
    r"""Read a CSV / TSV / Parquet table as :class:`Table` (all values as strings).

    Args:
        path (str or PathLike): the file. ``.parquet`` / ``.pq`` are read with pyarrow; other
            files as delimited text with a header line.
        columns (list[str], optional): keep only these columns (all that exist; a missing one
            is reported when it is used). (default: :obj:`None`, all)
        sep (str, optional): field separator of a text file; defaults to a tab for ``.tsv`` /
            ``.tab`` and a comma otherwise. (default: :obj:`None`)
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DatasetFormatError(path, 'file', 'not found' if not path.exists() else
                                 'not a file', 'give the path of the table file')
    wanted = None if columns is None else list(dict.fromkeys(c for c in columns if c))
    if path.suffix.lower() in PARQUET_SUFFIXES:
        return _read_parquet(path, wanted)
    if sep is None:
        sep = '\t' if path.suffix.lower() in TAB_SUFFIXES else ','
    if not isinstance(sep, str) or len(sep) != 1 or sep in '"\r\n':
        raise ValueError(f'--sep / sep={sep!r} for {path}: the field separator must be one '
                         f'character other than a quote or a line break. Fix: e.g. --sep , or '
                         f"--sep ';' (a tab: --sep $'\\t')")
    try:
        with open(path, newline='', encoding='utf-8') as f:
            reader = csv.reader(f, delimiter=sep)
            header = next(reader, None)
            if header is None:
                raise DatasetFormatError(path, 'header', 'the file is empty',
                                         'write a header line with the column names, then '
                                         'one line per row')
            header = [h.strip() for h in header]
            if header and header[0].startswith('\ufeff'):
                header[0] = header[0][1:]
            repeated = sorted({h for h in header if header.count(h) > 1})
            if repeated:
                raise DatasetFormatError(path, 'header', f'column name(s) {repeated} repeated',
                                         'give every column a distinct name')
            keep = [j for j, h in enumerate(header) if wanted is None or h in wanted]
            values: list[list[str]] = [[] for _ in keep]
            for line, row in enumerate(reader, start=2):
                if not row:
                    continue  # blank line
                if len(row) != len(header):
                    raise DatasetFormatError(
                        path, f'line {line}', f'{len(row)} fields, the header has '
                        f'{len(header)}', 'quote fields that contain the separator '
                        f'({sep!r}), or pass the right --sep / sep=')
                for col, j in zip(values, keep):
                    col.append(row[j])
    except UnicodeDecodeError as err:
        raise DatasetFormatError(path, 'encoding', f'not UTF-8 text ({err})',
                                 're-save the file as UTF-8') from err
    except csv.Error as err:
        raise DatasetFormatError(path, 'format', f'not a readable delimited file ({err})',
                                 'write one header line and one line per row') from err
    return Table({header[j]: col for j, col in zip(keep, values)}, str(path), 'csv', header)


def _read_parquet(path: Path, wanted: list[str] | None) -> Table:
    try:
        import pyarrow.parquet as pq
    except ImportError as err:
        raise ImportError(f'reading {path} needs pyarrow. Fix: pip install -e \'.[parquet]\' '
                          '(or pip install pyarrow), or save the table as CSV') from err
    try:
        schema_names = pq.read_schema(path).names
        names = [c for c in schema_names if wanted is None or c in wanted]
        table = pq.read_table(path, columns=names)
    except Exception as err:  # ArrowInvalid and friends
        raise DatasetFormatError(path, 'format', f'not a readable Parquet file ({err})',
                                 'write the table with pandas.DataFrame.to_parquet or '
                                 'pyarrow.parquet.write_table') from err
    return Table({c: [_as_text(x) for x in table.column(c).to_pylist()] for c in names},
                 str(path), 'parquet', list(schema_names))


def _as_table(obj, columns: Sequence[str], sep: str | None) -> Table:
    if isinstance(obj, Table):
        return obj
    if isinstance(obj, Mapping):
        return Table.from_columns(obj)
    return read_table(obj, columns, sep)


# --------------------------------------------------------------------------------------------
# Column parsing
# --------------------------------------------------------------------------------------------

def _ids(table: Table, name: str, option: str) -> np.ndarray:
    values = np.array([v.strip() for v in table.column(name, option)], dtype=object)
    empty = values == ''
    if empty.any():
        k = int(np.flatnonzero(empty)[0])
        raise DatasetFormatError(table.source, f'column "{name}"',
                                 f'{int(empty.sum())} empty id(s) (first at {table.where(k)})',
                                 'give every row an id, or remove those rows')
    values = values.astype(str)
    _check_numeric_aliases(table, name, values)
    return values


def _check_numeric_aliases(table: Table, name: str, values: np.ndarray) -> None:
    """Refuse ids that are different texts of one number (``1`` and ``1.0``, ``7`` and
    ``07``): read as typed they would become two users or items."""
    seen: dict = {}
    for text in np.unique(values).tolist():
        try:
            number = float(text)
        except ValueError:
            continue
        if number != number or number in (float('inf'), float('-inf')):
            continue
        other = seen.setdefault(number, text)
        if other != text:
            first = int(np.flatnonzero(values == text)[0])
            raise DatasetFormatError(
                table.source, f'column "{name}"',
                f'ids {other!r} and {text!r} are two spellings of the number {number:g} (first '
                f'{text!r} at {table.where(first)}); they would become two different ids',
                'write each id one way (e.g. all as integers), or make them non-numeric')


def _bad_value(table: Table, name: str, k: int, problem: str, fix: str):
    return DatasetFormatError(table.source, f'column "{name}"',
                              f'{problem} at {table.where(k)}', fix)


def _numbers(table: Table, name: str, option: str, what: str) -> np.ndarray:
    values = table.column(name, option)
    fix = f'write every {what} as a number (or name the right column with {option})'
    try:
        out = np.array(values, dtype=np.float64)
    except ValueError:
        for k, v in enumerate(values):
            try:
                float(v)
            except ValueError:
                raise _bad_value(table, name, k, f'{what} {v!r} is not a number', fix) from None
        raise
    bad = ~np.isfinite(out)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise _bad_value(table, name, k, f'{what} {values[k]!r} is not finite', fix)
    return out


def _timestamps(table: Table, name: str, option: str) -> np.ndarray:
    """Numbers as they are, or ISO-8601 date-times as seconds since 1970 (not mixed)."""
    values = table.column(name, option)
    fix = ('write every timestamp as a number (e.g. Unix seconds) or as an ISO-8601 '
           'date-time such as 2024-01-31T12:00:00, one format for the whole column')
    try:
        return _numbers(table, name, option, 'timestamp')
    except DatasetFormatError as err:
        if 'not finite' in err.problem:
            raise
    numeric = 0
    for k, v in enumerate(values):
        try:
            float(v)
            numeric += 1
            continue
        except ValueError:
            pass
        try:
            t = np.datetime64(v.strip(), 's')
        except ValueError:
            t = np.datetime64('NaT')
        if np.isnat(t):
            raise _bad_value(table, name, k, f'timestamp {v!r} is neither a number nor an '
                             'ISO-8601 date-time', fix)
    if numeric:
        raise DatasetFormatError(table.source, f'column "{name}"',
                                 f'{numeric} timestamp(s) are numbers and the others '
                                 'date-times', fix)
    stamps = np.array([v.strip() for v in values], dtype='datetime64[s]')
    return stamps.astype(np.int64).astype(np.float64)


def _natural_order(ids: np.ndarray) -> np.ndarray:
    """Permutation sorting ids numerically when all are integers, else as strings."""
    try:
        keys = np.array([int(x) for x in ids], dtype=object)
    except ValueError:
        return np.argsort(ids, kind='stable')
    if all(-2**62 < k < 2**62 for k in keys):
        return np.argsort(keys.astype(np.int64), kind='stable')
    return np.argsort(ids, kind='stable')


def _examples(values, n: int = 5) -> str:
    values = list(values)
    shown = ', '.join(repr(str(v)) for v in values[:n])
    return shown + (f', ... ({len(values)} in all)' if len(values) > n else '')


# --------------------------------------------------------------------------------------------
# Filtering and splitting (pure NumPy on integer codes)
# --------------------------------------------------------------------------------------------

def kcore_filter(users: np.ndarray, items: np.ndarray, k: int) -> np.ndarray:
    r"""Mask of the interactions of the ``k``-core: users and items with fewer than ``k``
    interactions are removed, repeatedly, until every remaining user and item has ``k``.

    Args:
        users, items (np.ndarray): integer codes of the (user, item) pairs (no duplicates).
        k (int): minimum interactions per user and per item; ``k <= 1`` keeps everything.
    """
    keep = np.ones(users.size, dtype=bool)
    if k <= 1 or users.size == 0:
        return keep
    nu, ni = int(users.max()) + 1, int(items.max()) + 1
    while True:
        du = np.bincount(users[keep], minlength=nu)
        di = np.bincount(items[keep], minlength=ni)
        drop = keep & ((du[users] < k) | (di[items] < k))
        if not drop.any():
            return keep
        keep &= ~drop


def heldout_counts(n: np.ndarray, val_ratio: float, test_ratio: float):
    r"""Validation and test counts per user from their interaction counts ``n``:
    ``round(n * ratio)`` with halves rounded up, leaving at least one training interaction
    (test is capped first, then validation)."""
    n = np.asarray(n, dtype=np.int64)
    test = np.floor(n * test_ratio + 0.5).astype(np.int64)
    val = np.floor(n * val_ratio + 0.5).astype(np.int64)
    test = np.minimum(test, np.maximum(n - 1, 0))
    val = np.minimum(val, np.maximum(n - 1 - test, 0))
    return val, test


def split_per_user(users: np.ndarray, heldout_first: np.ndarray, num_users: int,
                   val_ratio: float, test_ratio: float) -> np.ndarray:
    r"""Assign each interaction to train (0), val (1) or test (2), per user.

    Within each user, interactions are ranked by :obj:`heldout_first` (ascending); the first
    ``test`` of them go to test, the next ``val`` to validation (counts from
    :func:`heldout_counts`), the rest to train.

    Args:
        users (np.ndarray): user index of each interaction.
        heldout_first (np.ndarray): rank key; random numbers for a random split, minus the
            timestamp for a temporal one.
        num_users (int): number of users.
        val_ratio, test_ratio (float): fractions held out.
    """
    order = np.lexsort((heldout_first, users))
    n = np.bincount(users, minlength=num_users)
    start = np.concatenate([[0], np.cumsum(n)[:-1]])
    pos = np.empty(users.size, dtype=np.int64)
    pos[order] = np.arange(users.size) - start[users[order]]
    val, test = heldout_counts(n, val_ratio, test_ratio)
    split = np.zeros(users.size, dtype=np.int8)
    split[pos < test[users] + val[users]] = 1
    split[pos < test[users]] = 2
    return split
