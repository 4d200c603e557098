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

import shutil
from collections.abc import Callable, Mapping, Sequence
from os import PathLike
from pathlib import Path

import numpy as np

from .build_output import (  # noqa: F401 - re-exported: the historical import path
    BUILD_INFO_FILE,
    ID_MAP_FILE,
    BuildResult,
    OutputExistsError,
    _image_paths,
    _prepare_output,
    _staging_dir,
    _swap_in,
    _write_info,
    _write_output,
    item_texts,
)
from .dataset import dataset_stats, read_mmssl_folder
from .encoders import SentenceEncoder, encode_cached, torchvision_image_encoder
from .table import (  # noqa: F401 - re-exported: the historical import path
    PARQUET_SUFFIXES,
    SPLIT_MODES,
    TAB_SUFFIXES,
    Table,
    _as_table,
    _examples,
    _ids,
    _natural_order,
    _numbers,
    _timestamps,
    heldout_counts,
    kcore_filter,
    read_table,
    split_per_user,
)
from .validation import DatasetFormatError


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
    for option, folder in (('--output / output', output), ('--cache-dir / cache_dir', cache_dir)):
        if folder is not None and str(folder).strip() == '':
            raise ValueError(f'{option} is empty: it would name the current folder. Fix: give '
                             f'a folder path, e.g. datasets/my-data')
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
    # Built into a sibling folder, read back, then swapped in with renames: a failure (a full
    # disk, a kill) leaves the dataset already in the output folder as it was.
    stage = _staging_dir(root)
    try:
        _write_output(stage, splits, features, id_map, info)
        data = read_mmssl_folder(stage / 'raw', list(features), name)
        stats = dataset_stats(data)
        expected = {s: sum(map(len, splits[s].values())) for s in splits}
        if (stats['users'], stats['items']) != (num_users, num_items) or \
                any(stats[s] != expected[s] for s in expected):
            raise RuntimeError(f'{root}: the folder read back ({stats}) differs from what was '
                               f'built ({num_users} users, {num_items} items, {expected}); '
                               'please report this bug')
        info['stats'] = {k: v for k, v in stats.items() if k != 'name'}
        _write_info(stage, info)
        _prepare_output(root, overwrite)  # again: another process may have written meanwhile
        _swap_in(stage, root)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return BuildResult(root, stats, counts, encoded)
