r"""What :func:`~mmssl_pyg.data.builder.build_dataset` writes: the dataset folder's files
(:data:`ID_MAP_FILE`, :data:`BUILD_INFO_FILE`, the raw splits and features), the texts and
image paths it encodes, and :class:`BuildResult`.
"""
from __future__ import annotations

import json
import shutil
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .readers import FEATURE_FILE, RAW_FORMATS
from .stats import format_stats
from .table import Table, _examples
from .validation import DatasetFormatError

ID_MAP_FILE = 'id_map.json'
BUILD_INFO_FILE = 'build_info.json'

_SPLIT_FILES = tuple(RAW_FORMATS['json'].values())

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
