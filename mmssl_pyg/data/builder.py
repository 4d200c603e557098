r"""Build a dataset folder from your own data: an interaction table and an item table.

:func:`build_dataset` turns

* an **interaction table** (CSV, TSV or Parquet; one row per interaction: a user id, an item
  id, optionally a rating and a timestamp), and
* an **item table** (item id, text columns, optionally an image path column)

into a folder that :func:`~mmssl_pyg.data.load_dataset` reads::

    <output>/raw/train.json, val.json, test.json   user index -> item indices, per split
    <output>/raw/text_feat.npy                     [num_items, d] text features (if text)
    <output>/raw/image_feat.npy                    [num_items, d] image features (if images)
    <output>/raw/id_map.json                       original id -> index, users and items
    <output>/build_info.json                       sources, options, counts, statistics
    <output>/cache/                                encoder outputs, reused by a rebuild

The steps, in order: keep the rows with ``rating >= min_rating`` (when given); merge repeated
(user, item) pairs into one (the latest by timestamp, else the first); drop users and items
with fewer than ``kcore`` interactions, repeatedly, until none is left (when ``kcore > 1``);
index users and items by their sorted original ids (numerically when every id is an integer);
split each user's interactions into train / val / test, either at random (with a seed) or by
time (the latest ones held out); encode the item texts and images. Every count removed at each
step is printed and written to ``build_info.json``, so nothing is dropped silently. Items of
the item table with no interaction left are not part of the dataset (their number is reported).

Each user with ``n`` interactions gets ``round(n * val_ratio)`` validation and
``round(n * test_ratio)`` test interactions (halves round up), and always keeps at least one
training interaction; so with 8:1:1, users with fewer than 5 interactions have no held-out
item (a 5-core filter avoids that).

Bad input raises :class:`~mmssl_pyg.data.validation.DatasetFormatError` naming the file, the
column and the fix (missing columns, empty ids, ratings that are not numbers, item ids that do
not join the item table, items without text, image files that do not exist); encoders that
cannot run offline raise :class:`~mmssl_pyg.data.encoders.EncoderError`.
"""
from __future__ import annotations

import csv
import json
import shutil
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

import numpy as np

from .dataset import dataset_stats, format_stats, read_mmssl_folder
from .encoders import SentenceEncoder, encode_cached, torchvision_image_encoder
from .readers import FEATURE_FILE, RAW_FORMATS
from .validation import DatasetFormatError

SPLIT_MODES = ('random', 'temporal')
PARQUET_SUFFIXES = ('.parquet', '.pq')
TAB_SUFFIXES = ('.tsv', '.tab')
ID_MAP_FILE = 'id_map.json'
BUILD_INFO_FILE = 'build_info.json'
#: Files of ``raw/`` that a build writes (and ``overwrite=True`` replaces).
_SPLIT_FILES = tuple(RAW_FORMATS['json'].values())


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
    return values.astype(str)


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


# --------------------------------------------------------------------------------------------
# The builder
# --------------------------------------------------------------------------------------------

@dataclass
class BuildResult:
    r"""What :func:`build_dataset` wrote.

    Attributes:
        root (Path): the dataset folder (``load_dataset(str(root))`` reads it).
        stats (dict): :func:`~mmssl_pyg.data.dataset_stats` of the written data.
        counts (dict): rows read and removed at each step.
        encoded (dict): ``{modality: 'encoded' | 'cache file'}``.
    """
    root: Path
    stats: dict
    counts: dict
    encoded: dict = field(default_factory=dict)

    def summary(self) -> str:
        c = self.counts
        lines = [f'built {self.root}', f"  rows read: {c['rows']:,}"]
        if c.get('below_min_rating') is not None:
            lines.append(f"  below the minimum rating: {c['below_min_rating']:,} removed")
        lines.append(f"  repeated (user, item) pairs merged: {c['duplicates']:,}")
        if c.get('kcore'):
            lines.append(f"  {c['kcore']}-core: removed {c['kcore_interactions']:,} interactions "
                         f"({c['kcore_users']:,} users, {c['kcore_items']:,} items)")
        if c.get('catalog_items_unused') is not None:
            lines.append(f"  item-table rows without a kept interaction: "
                         f"{c['catalog_items_unused']:,} (not in the dataset)")
        lines.append(f"  users without held-out items (too few interactions): "
                     f"{c['users_train_only']:,}")
        for m, how in self.encoded.items():
            lines.append(f'  {m} features: {how}')
        lines.append(format_stats(self.stats))
        return '\n'.join(lines)


class OutputExistsError(FileExistsError, ValueError):
    """The output folder already holds a dataset and ``overwrite`` is off."""


def _check_ratios(ratios: Sequence[float]) -> tuple[float, float, float]:
    given = ratios
    try:
        ratios = tuple(float(r) for r in ratios)
    except (TypeError, ValueError):
        ratios = ()
    if len(ratios) != 3 or min(ratios) < 0 or ratios[0] <= 0 or abs(sum(ratios) - 1) > 1e-6:
        raise ValueError(f'ratios must be three fractions train, val, test that sum to 1 '
                         f'with train > 0, e.g. 0.8,0.1,0.1; got {given!r}')
    return ratios


def _prepare_output(root: Path, overwrite: bool) -> None:
    raw = root / 'raw'
    existing = [p for p in [*(raw / f for f in _SPLIT_FILES), raw / ID_MAP_FILE,
                            root / BUILD_INFO_FILE] if p.exists()]
    existing += sorted(raw.glob(FEATURE_FILE.format('*'))) if raw.is_dir() else []
    if existing and not overwrite:
        raise OutputExistsError(
            f'{root} already holds a dataset ({", ".join(p.name for p in existing[:4])}'
            f'{", ..." if len(existing) > 4 else ""}); nothing was overwritten. Fix: pass '
            '--force (overwrite=True) to replace it, or choose another output folder')


def _write_output(root: Path, splits: dict[str, dict[int, list[int]]],
                  features: dict[str, np.ndarray], id_map: dict, info: dict) -> None:
    raw = root / 'raw'
    raw.mkdir(parents=True, exist_ok=True)
    for p in [*raw.glob(FEATURE_FILE.format('*')), root / BUILD_INFO_FILE]:
        p.unlink(missing_ok=True)  # only with overwrite=True (checked before)
    if (root / 'processed').is_dir():  # derived from the old raw files: stale now
        shutil.rmtree(root / 'processed')
    for split, fname in RAW_FORMATS['json'].items():
        with open(raw / fname, 'w') as f:
            json.dump({str(u): items for u, items in splits[split].items()}, f)
    for m, feat in features.items():
        np.save(raw / FEATURE_FILE.format(m), feat.astype(np.float32))
    with open(raw / ID_MAP_FILE, 'w') as f:
        json.dump(id_map, f)
    with open(root / BUILD_INFO_FILE, 'w') as f:
        json.dump(info, f, indent=2)


def item_texts(table: Table, text_cols: Sequence[str], template: str | None = None,
               rows: Sequence[int] | None = None, id_col: str | None = None) -> list[str]:
    r"""One text per item row: :obj:`template` formatted with the row's text columns
    (``'{title} ({year})'``), or the non-empty text columns joined with ``'. '``.

    Args:
        table (Table): the item table.
        text_cols (list[str]): its text columns.
        template (str, optional): a format string over :obj:`text_cols`.
        rows (list[int], optional): the rows to use, in order. (default: all)
        id_col (str, optional): id column, named in the error about empty texts.

    Raises:
        DatasetFormatError: when a column is missing or a used row has every text column
            empty.
        ValueError: when the template is malformed or names a column outside :obj:`text_cols`.
    """
    cols = {c: table.column(c, '--text-cols') for c in text_cols}
    rows = range(table.num_rows) if rows is None else rows
    if template is not None:
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
        except ValueError as err:
            raise ValueError(f'text template {template!r} is not a valid format string '
                             f'({err}); write columns as {{name}}') from err
        unknown = [f for f in fields if f not in cols]
        if unknown:
            raise ValueError(f'text template {template!r} names {unknown}, which are not among '
                             f'the text columns {list(cols)}; add them to --text-cols')
    empty = [r for r in rows if not any(cols[c][r].strip() for c in cols)]
    if empty:
        ids = table.columns.get(id_col) if id_col else None
        which = f'items {_examples([ids[r] for r in empty])}; ' if ids else ''
        raise DatasetFormatError(
            table.source, ', '.join(f'column "{c}"' for c in cols),
            f'{len(empty)} item(s) have no text ({which}first at {table.where(empty[0])})',
            'write a text for every item, or remove those items from both tables')
    values = [{c: cols[c][r].strip() for c in cols} for r in rows]
    if template is None:
        return ['. '.join(v for v in row.values() if v) for row in values]
    return [template.format(**row) for row in values]


def _image_paths(table: Table, image_col: str, image_root, rows: Sequence[int],
                 id_col: str) -> list[Path]:
    """Existing image files of the used item rows; relative paths from :obj:`image_root`,
    else the item table's folder."""
    column = table.column(image_col, '--image-col')
    base = Path(image_root).expanduser() if image_root is not None else (
        Path(table.source).parent if table.kind != 'memory' else Path.cwd())
    paths, bad = [], []
    for r in rows:
        given = column[r].strip()
        p = Path(given).expanduser() if given else None
        p = p if p is None or p.is_absolute() else base / p
        if p is None or not p.is_file():
            bad.append((r, given, p))
        paths.append(p)
    if bad:
        r, given, p = bad[0]
        raise DatasetFormatError(
            table.source, f'column "{image_col}"',
            f'{len(bad)} item(s) have no image file (first: item {table.columns[id_col][r]!r} '
            f'at {table.where(r)}: {given!r}' + (f' -> {p} does not exist)' if p else ')'),
            'give an existing image path for every item (relative paths are read from '
            '--image-root, else the item table\'s folder)')
    return paths


def build_dataset(
    interactions: str | PathLike | Table | Mapping,
    output: str | PathLike,
    items: str | PathLike | Table | Mapping | None = None,
    *,
    user_col: str = 'user_id',
    item_col: str = 'item_id',
    rating_col: str | None = None,
    time_col: str | None = None,
    item_id_col: str | None = None,
    text_cols: Sequence[str] = (),
    text_template: str | None = None,
    image_col: str | None = None,
    image_root: str | PathLike | None = None,
    min_rating: float | None = None,
    kcore: int = 0,
    split: str = 'random',
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    text_encoder: Callable | str | PathLike | None = None,
    image_encoder: Callable | None = None,
    image_weights: str | PathLike | None = None,
    image_model: str = 'resnet50',
    batch_size: int = 64,
    device: str = 'cpu',
    cache_dir: str | PathLike | None = None,
    sep: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    name: str | None = None,
    sources: Mapping[str, str] | None = None,
) -> BuildResult:
    r"""Build a dataset folder in the library's raw format from an interaction table and an
    item table (see the module docstring for the steps and the layout).

    Args:
        interactions (str, PathLike, Table or dict): the interaction table (CSV / TSV /
            Parquet file, a :class:`Table`, or a dict of columns).
        output (str or PathLike): the dataset folder to write.
        items (str, PathLike, Table or dict, optional): the item table; needed for text and
            image features, and then every interacted item must have a row.
            (default: :obj:`None`, an ID-only dataset)
        user_col, item_col (str, optional): id columns of the interaction table.
            (default: ``'user_id'``, ``'item_id'``)
        rating_col (str, optional): rating column, used with :obj:`min_rating`.
        time_col (str, optional): timestamp column (numbers, or ISO-8601 date-times); needed
            for ``split='temporal'``, and picks the latest of repeated pairs.
        item_id_col (str, optional): id column of the item table. (default: :obj:`item_col`)
        text_cols (list[str], optional): text columns of the item table; empty for no text
            modality. (default: ``()``)
        text_template (str, optional): e.g. ``'{title} ({year}). {genres}'``; by default the
            non-empty text columns are joined with ``'. '``.
        image_col (str, optional): column of image paths (relative ones are taken from
            :obj:`image_root`, else the item table's folder); adds an ``image`` modality.
        image_root (str or PathLike, optional): folder of relative image paths.
        min_rating (float, optional): keep rows with ``rating >= min_rating`` as positives.
            (default: :obj:`None`, keep all rows)
        kcore (int, optional): minimum interactions per user and per item, applied
            repeatedly; ``0`` or ``1`` disables it. (default: :obj:`0`)
        split (str, optional): ``'random'`` (per user, with :obj:`seed`) or ``'temporal'``
            (each user's latest interactions are held out). (default: ``'random'``)
        ratios (tuple[float, float, float], optional): train, val, test fractions per user.
            (default: ``(0.8, 0.1, 0.1)``)
        seed (int, optional): seed of the random split. (default: :obj:`0`)
        text_encoder (callable, str or PathLike, optional): a sentence-transformers model
            folder, or a callable ``list[str] -> [n, d] array``. :obj:`None` uses the
            all-MiniLM-L6-v2 folder of the ``features`` extra. (default: :obj:`None`)
        image_encoder (callable, optional): a callable ``list[Path] -> [n, d] array`` (e.g. an
            :class:`~mmssl_pyg.data.encoders.ImageEncoder`); :obj:`None` builds a torchvision
            :obj:`image_model` with :obj:`image_weights`. (default: :obj:`None`)
        image_weights (str or PathLike, optional): state-dict file of :obj:`image_model`.
        image_model (str, optional): torchvision model name. (default: ``'resnet50'``)
        batch_size (int, optional): texts / images per encoder pass. (default: :obj:`64`)
        device (str, optional): encoder device, ``'cpu'``, ``'cuda'`` or ``'auto'``.
            (default: ``'cpu'``)
        cache_dir (str or PathLike, optional): encoder cache. (default: ``<output>/cache``)
        sep (str, optional): separator of text tables (default: tab for ``.tsv``, else comma).
        overwrite (bool, optional): replace a dataset already in :obj:`output` (its
            ``processed/`` folder is removed too). (default: :obj:`False`)
        progress (bool, optional): progress bars while encoding. (default: :obj:`True`)
        name (str, optional): dataset name in ``build_info.json`` and the loaded data.
            (default: the output folder's name)
        sources (dict, optional): provenance lines recorded in ``build_info.json``.

    Returns:
        BuildResult: the folder, its statistics and the counts of each step.

    Example:
        >>> result = build_dataset('ratings.csv', 'datasets/my-data', items='movies.csv',
        ...                        rating_col='rating', min_rating=4, kcore=5,
        ...                        text_cols=['title', 'genres'])
        >>> dataset = load_dataset('datasets/my-data')
    """
    root = Path(output).expanduser()
    name = name or root.resolve().name
    if split not in SPLIT_MODES:
        raise ValueError(f'split must be one of {SPLIT_MODES}, got {split!r}')
    _, val_ratio, test_ratio = _check_ratios(ratios)
    if split == 'temporal' and time_col is None:
        raise ValueError("split='temporal' needs the timestamp column: pass --time-col / "
                         'time_col=NAME')
    if min_rating is not None and rating_col is None:
        raise ValueError('min_rating needs the rating column: pass --rating-col / '
                         'rating_col=NAME')
    if kcore < 0:
        raise ValueError(f'kcore must be >= 0, got {kcore}')
    text_cols = list(text_cols or [])
    if (text_cols or image_col) and items is None:
        raise ValueError('text and image features come from the item table: pass --items / '
                         'items=FILE')
    if text_template is not None and not text_cols:
        raise ValueError('text_template needs the text columns: pass --text-cols / text_cols')
    _prepare_output(root, overwrite)

    # --- interactions -----------------------------------------------------------------
    inter = _as_table(interactions, [user_col, item_col, rating_col, time_col], sep)
    users = _ids(inter, user_col, '--user-col')
    item_ids = _ids(inter, item_col, '--item-col')
    if inter.num_rows == 0:
        raise DatasetFormatError(inter.source, 'rows', 'the table has no interaction',
                                 'give one row per (user, item) interaction')
    rows = np.arange(inter.num_rows)
    counts: dict = {'rows': int(inter.num_rows)}
    times = _timestamps(inter, time_col, '--time-col') if time_col else None
    keep = np.ones(inter.num_rows, dtype=bool)
    if rating_col is not None:
        ratings = _numbers(inter, rating_col, '--rating-col', 'rating')
        if min_rating is not None:
            keep = ratings >= float(min_rating)
            counts['below_min_rating'] = int((~keep).sum())

    # --- item table and the join ---------------------------------------------------------
    item_table, catalog, id_col = None, None, item_id_col or item_col
    if items is not None:
        item_table = _as_table(items, [id_col, *text_cols, image_col], sep)
        catalog = _ids(item_table, id_col, '--item-id-col')
        uniq, first, n = np.unique(catalog, return_index=True, return_counts=True)
        if (n > 1).any():
            k = int(first[np.flatnonzero(n > 1)[0]])
            raise DatasetFormatError(
                item_table.source, f'column "{id_col}"',
                f'{int((n > 1).sum())} item id(s) appear on more than one row (first: '
                f'{str(catalog[k])!r} at {item_table.where(k)})', 'give each item one row')
        missing = np.setdiff1d(np.unique(item_ids), uniq)
        if missing.size:
            raise DatasetFormatError(
                inter.source, f'column "{item_col}"',
                f'{missing.size} item id(s) have no row in the item table {item_table.source} '
                f'(column "{id_col}"): {_examples(missing)}',
                'add those items to the item table, remove their interactions, or name the '
                'matching id columns with --item-col / --item-id-col')

    # --- positives, repeated pairs, k-core ---------------------------------------------------
    users, item_ids, rows = users[keep], item_ids[keep], rows[keep]
    times = times[keep] if times is not None else None
    if users.size == 0:
        raise DatasetFormatError(inter.source, f'column "{rating_col}"',
                                 f'no row has a rating >= {min_rating}',
                                 'lower --min-rating / min_rating')
    u_uniq, u_code = np.unique(users, return_inverse=True)
    i_uniq, i_code = np.unique(item_ids, return_inverse=True)
    pair = u_code.astype(np.int64) * len(i_uniq) + i_code
    latest = times if times is not None else -rows.astype(np.float64)  # else the first row
    order = np.lexsort((latest, pair))
    last_of_pair = np.r_[pair[order][1:] != pair[order][:-1], True]
    chosen = np.sort(order[last_of_pair])
    counts['duplicates'] = int(pair.size - chosen.size)
    u_code, i_code, rows = u_code[chosen], i_code[chosen], rows[chosen]
    times = times[chosen] if times is not None else None
    if kcore > 1:
        core = kcore_filter(u_code, i_code, kcore)
        counts.update(kcore=int(kcore), kcore_interactions=int((~core).sum()),
                      kcore_users=int(np.unique(u_code).size - np.unique(u_code[core]).size),
                      kcore_items=int(np.unique(i_code).size - np.unique(i_code[core]).size))
        if not core.any():
            raise DatasetFormatError(inter.source, 'interactions',
                                     f'the {kcore}-core is empty: no user and item have '
                                     f'{kcore} interactions together', 'lower --kcore / kcore')
        u_code, i_code, rows = u_code[core], i_code[core], rows[core]
        times = times[core] if times is not None else None

    # --- indices: sorted original ids ----------------------------------------------------
    def reindex(uniq: np.ndarray, code: np.ndarray):
        used = np.unique(code)
        orig = uniq[used][_natural_order(uniq[used])]
        lookup = np.full(uniq.size, -1, dtype=np.int64)
        lookup[np.searchsorted(uniq, orig)] = np.arange(orig.size)
        return orig, lookup[code]
    user_orig, u_idx = reindex(u_uniq, u_code)
    item_orig, i_idx = reindex(i_uniq, i_code)
    num_users, num_items = int(user_orig.size), int(item_orig.size)

    # --- split -------------------------------------------------------------------------------
    if split == 'random':
        canonical = np.lexsort((i_idx, u_idx))  # keys independent of the table's row order
        key = np.empty(u_idx.size)
        key[canonical] = np.random.default_rng(seed).random(u_idx.size)
    else:  # latest first; ties: the later row first
        key = np.lexsort((-rows, -times)).argsort().astype(np.float64)
    assign = split_per_user(u_idx, key, num_users, val_ratio, test_ratio)
    splits: dict[str, dict[int, list[int]]] = {}
    for s, code in (('train', 0), ('val', 1), ('test', 2)):
        m = assign == code
        if not m.any():
            raise DatasetFormatError(
                inter.source, 'interactions', f'the {s} split is empty: every user has too few '
                'interactions to hold one out with ratios '
                f'{tuple(float(r) for r in ratios)}',
                'raise --kcore (5 gives every user a val and a test item at 8:1:1) or the '
                'held-out ratios')
        su, si = u_idx[m], i_idx[m]
        o = np.lexsort((si, su))
        su, si = su[o], si[o]
        bounds = np.flatnonzero(np.r_[True, su[1:] != su[:-1], True])
        splits[s] = {int(su[a]): si[a:b].tolist() for a, b in zip(bounds[:-1], bounds[1:])}
    n_user = np.bincount(u_idx, minlength=num_users)
    val_n, test_n = heldout_counts(n_user, val_ratio, test_ratio)
    counts['users_train_only'] = int(((val_n + test_n) == 0).sum())

    # --- features ----------------------------------------------------------------------------
    features: dict[str, np.ndarray] = {}
    encoded: dict[str, str] = {}
    modality_info: dict[str, dict] = {}
    cache = Path(cache_dir).expanduser() if cache_dir is not None else root / 'cache'
    if item_table is not None:
        row_of = dict(zip(catalog.tolist(), range(catalog.size)))
        item_rows = [row_of[i] for i in item_orig.tolist()]
        counts['catalog_items_unused'] = int(catalog.size - num_items)
        # inputs and encoders first: a bad row or model stops the build before any encoding
        texts = item_texts(item_table, text_cols, text_template, item_rows, id_col) \
            if text_cols else None
        paths = _image_paths(item_table, image_col, image_root, item_rows, id_col) \
            if image_col else None
        encoders = {}
        if texts is not None:
            encoders['text'] = text_encoder
            if text_encoder is None or isinstance(text_encoder, (str, PathLike)):
                encoders['text'] = SentenceEncoder(text_encoder, batch_size=batch_size,
                                                   device=device, progress=progress)
            modality_info['text'] = {'columns': text_cols, 'template': text_template}
        if paths is not None:
            encoders['image'] = image_encoder
            if image_encoder is None:
                encoders['image'] = torchvision_image_encoder(
                    image_model, image_weights, batch_size=batch_size, device=device,
                    progress=progress)
            modality_info['image'] = {'column': image_col}
        for m, inputs in (('text', texts), ('image', paths)):
            if inputs is None:
                continue
            enc = encoders[m]
            features[m], hit = encode_cached(enc, inputs, m, cache)
            encoded[m] = f'read from cache {hit}' if hit else f'encoded with {enc!r}'
            modality_info[m]['encoder'] = repr(enc)
    features = {m: features[m] for m in ('image', 'text') if m in features}

    # --- write and read back -------------------------------------------------------------
    id_map = {'user_column': user_col, 'item_column': item_col,
              'users': dict(zip(user_orig.tolist(), range(num_users))),
              'items': dict(zip(item_orig.tolist(), range(num_items)))}
    info = {
        'name': name,
        'sources': dict(sources or {'interactions': inter.source,
                                    **({'items': item_table.source} if item_table else {})}),
        'options': {'user_col': user_col, 'item_col': item_col, 'rating_col': rating_col,
                    'time_col': time_col, 'item_id_col': item_id_col, 'text_cols': text_cols,
                    'text_template': text_template, 'image_col': image_col,
                    'min_rating': min_rating, 'kcore': kcore, 'split': split,
                    'ratios': [float(r) for r in ratios], 'seed': seed},
        'modalities': {m: {'dim': int(f.shape[1]), **modality_info[m]}
                       for m, f in features.items()},
        'counts': counts,
    }
    _write_output(root, splits, features, id_map, info)
    data = read_mmssl_folder(root / 'raw', list(features), name)
    stats = dataset_stats(data)
    expected = {s: sum(map(len, splits[s].values())) for s in splits}
    if (stats['users'], stats['items']) != (num_users, num_items) or \
            any(stats[s] != expected[s] for s in expected):
        raise RuntimeError(f'{root}: the folder read back ({stats}) differs from what was '
                           f'built ({num_users} users, {num_items} items, {expected}); please '
                           'report this bug')
    info['stats'] = {k: v for k, v in stats.items() if k != 'name'}
    with open(root / BUILD_INFO_FILE, 'w') as f:
        json.dump(info, f, indent=2)
    return BuildResult(root, stats, counts, encoded)
