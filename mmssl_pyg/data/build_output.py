r"""What :func:`~mmssl_pyg.data.builder.build_dataset` writes: the dataset folder's files
(:data:`ID_MAP_FILE`, :data:`BUILD_INFO_FILE`, the raw splits and features), the texts and
image paths it encodes, and :class:`BuildResult`.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import string
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from glob import escape as glob_escape
from pathlib import Path

import numpy as np

from ..utils.io import OutputError, describe_os_error, pid_alive
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


def _old_dataset(root: Path) -> list[Path]:
    """The files and folders of a dataset already in ``root`` that a build replaces: the raw
    splits, the id map, the feature files, ``build_info.json`` and ``processed/`` (derived
    from the old raw files)."""
    raw = root / 'raw'
    found = [p for p in [*(raw / f for f in _SPLIT_FILES), raw / ID_MAP_FILE,
                         root / BUILD_INFO_FILE, root / 'processed']
             if p.exists() or p.is_symlink()]
    found += sorted(raw.glob(FEATURE_FILE.format('*'))) if raw.is_dir() else []
    return found


def _prepare_output(root: Path, overwrite: bool) -> None:
    existing = _old_dataset(root)
    if existing and not overwrite:
        names = [str(p.relative_to(root)) + ('/' if p.is_dir() else '') for p in existing]
        raise OutputExistsError(
            f'{root} already holds a dataset ({", ".join(names[:4])}'
            f'{", ..." if len(names) > 4 else ""}); nothing was overwritten. Fix: pass '
            '--force (overwrite=True) to replace it, or choose another output folder')


def _staging_dir(root: Path) -> Path:
    """A new, empty sibling folder of ``root`` where a build writes before the swap
    (``.<name>.build-<pid>-XXXX``); those of killed builds are removed first."""
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        for old in root.parent.glob(f'.{glob_escape(root.name)}.build-*'):
            m = re.fullmatch(rf'\.{re.escape(root.name)}\.build-(\d+)-\w+', old.name)
            if m is not None and old.is_dir() and not old.is_symlink() and \
                    not pid_alive(int(m.group(1))):
                shutil.rmtree(old, ignore_errors=True)
        return Path(tempfile.mkdtemp(prefix=f'.{root.name}.build-{os.getpid()}-',
                                     dir=root.parent))
    except OSError as err:
        raise OutputError(describe_os_error(err, root.parent, 'cannot create a folder in'))\
            from err


def _write_output(stage: Path, splits: dict[str, dict[int, list[int]]],
                  features: dict[str, np.ndarray], id_map: dict, info: dict) -> None:
    """Write the dataset into the staging folder ``stage`` (see :func:`_swap_in`)."""
    raw = stage / 'raw'
    try:
        raw.mkdir(parents=True, exist_ok=True)
        for split, fname in RAW_FORMATS['json'].items():
            with open(raw / fname, 'w') as f:
                json.dump({str(u): items for u, items in splits[split].items()}, f)
        for m, feat in features.items():
            np.save(raw / FEATURE_FILE.format(m), feat.astype(np.float32))
        with open(raw / ID_MAP_FILE, 'w') as f:
            json.dump(id_map, f)
        _write_info(stage, info)
    except OSError as err:
        raise OutputError(describe_os_error(err, stage, 'cannot write the new dataset')) \
            from err


def _write_info(folder: Path, info: dict) -> None:
    with open(folder / BUILD_INFO_FILE, 'w') as f:
        json.dump(info, f, indent=2)
        f.flush()
        os.fsync(f.fileno())


def _swap_in(stage: Path, root: Path) -> None:
    """Replace the dataset in ``root`` by the one built in ``stage``, with renames only.

    The old dataset's files (:func:`_old_dataset`) are first moved aside into a second sibling
    folder, then the new files are moved in, then the old ones are deleted. Any failure puts
    the old files back; nothing else in ``root`` (an encoder cache, the user's own files) is
    touched. When that undo fails too, the error names what it left: the new files it could not
    remove and the old ones it could not put back, which stay in the aside folder."""
    aside = Path(tempfile.mkdtemp(prefix=f'.{root.name}.old-', dir=root.parent))
    moved: list[tuple[Path, Path]] = []
    placed: list[Path] = []
    try:
        for old in _old_dataset(root):
            dest = aside / old.relative_to(root)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(old, dest)
            moved.append((old, dest))
        (root / 'raw').mkdir(parents=True, exist_ok=True)
        for new in [*sorted((stage / 'raw').iterdir()), stage / BUILD_INFO_FILE]:
            target = root / new.relative_to(stage)
            os.replace(new, target)
            placed.append(target)
    except BaseException as err:
        not_removed, not_back = [], []
        for target in placed:
            try:
                target.unlink()
            except OSError:
                not_removed.append(target)
        for old, dest in reversed(moved):
            try:
                os.replace(dest, old)
            except OSError:
                not_back.append(old)
        back = {old for old, _ in moved} - set(not_back)
        not_removed = [p for p in not_removed if p not in back]  # an old file replaced it
        if not not_back:  # the aside folder holds no old file any more
            shutil.rmtree(aside, ignore_errors=True)
        if not_removed or not_back:
            raise OutputError(_undo_failed(root, aside, err, not_removed, not_back)) from err
        if isinstance(err, OSError) and not isinstance(err, OutputError):
            raise OutputError(describe_os_error(err, root, 'cannot replace the dataset in'))\
                from err
        raise
    shutil.rmtree(aside, ignore_errors=True)


def _undo_failed(root: Path, aside: Path, err: BaseException, not_removed: list[Path],
                 not_back: list[Path]) -> str:
    """The message of a failed swap whose undo failed too: what is left where, and the fix.
    The aside folder is then kept, so no old file is ever deleted."""
    def names(paths):
        return ', '.join(str(p.relative_to(root)) for p in paths)

    reason = getattr(err, 'strerror', None) or str(err) or type(err).__name__
    left, fix = [], []
    if not_removed:
        left.append(f'new files still in it: {names(not_removed)}')
        fix.append('delete those new files')
    if not_back:
        left.append(f'old files kept in {aside}: {names(not_back)}')
        fix.append(f'move the old files from {aside} back into {root} (same layout)')
    return (f'cannot replace the dataset in {root} ({reason}), and could not undo it ('
            f'{"; ".join(left)}). Fix: {" and ".join(fix)}, then run the command again')


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
