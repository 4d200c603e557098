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
from dataclasses import dataclass, replace
from os import PathLike
from pathlib import Path

import numpy as np

from .build_output import (
    BuildResult,
    _image_paths,
    _prepare_output,
    _staging_dir,
    _swap_in,
    _write_info,
    _write_output,
    item_texts,
)
from .encoders import SentenceEncoder, encode_cached, torchvision_image_encoder
from .folder import read_mmssl_folder
from .stats import dataset_stats
from .table import (
    SPLIT_MODES,
    Table,
    _as_table,
    _examples,
    _ids,
    _natural_order,
    _numbers,
    _timestamps,
    heldout_counts,
    kcore_filter,
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


@dataclass
class BuildRequest:
    r"""Every option of :func:`build_dataset`, in one object (the command line's
    ``mmssl-pyg build-dataset`` flags carry the same names, ``--text-model`` being
    :obj:`text_encoder` and ``--force`` :obj:`overwrite`).

    Attributes:
        interactions (str, PathLike, Table or dict): the interaction table (CSV / TSV /
            Parquet file, a :class:`~mmssl_pyg.data.table.Table`, or a dict of columns).
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
    """
    interactions: str | PathLike | Table | Mapping
    output: str | PathLike
    items: str | PathLike | Table | Mapping | None = None
    user_col: str = 'user_id'
    item_col: str = 'item_id'
    rating_col: str | None = None
    time_col: str | None = None
    item_id_col: str | None = None
    text_cols: Sequence[str] = ()
    text_template: str | None = None
    image_col: str | None = None
    image_root: str | PathLike | None = None
    min_rating: float | None = None
    kcore: int = 0
    split: str = 'random'
    ratios: Sequence[float] = (0.8, 0.1, 0.1)
    seed: int = 0
    text_encoder: Callable | str | PathLike | None = None
    image_encoder: Callable | None = None
    image_weights: str | PathLike | None = None
    image_model: str = 'resnet50'
    batch_size: int = 64
    device: str = 'cpu'
    cache_dir: str | PathLike | None = None
    sep: str | None = None
    overwrite: bool = False
    progress: bool = True
    name: str | None = None
    sources: Mapping[str, str] | None = None

    @property
    def root(self) -> Path:
        """The output folder."""
        return Path(self.output).expanduser()

    @property
    def id_col(self) -> str:
        """The item table's id column."""
        return self.item_id_col or self.item_col

    def check(self) -> tuple[float, float, float]:
        """Raise :class:`ValueError` naming the option and the fix for options that cannot
        go together; return the three split ratios as floats. Normalises :attr:`text_cols`
        to a list and :attr:`name` to the output folder's name when not given."""
        for option, folder in (('--output / output', self.output),
                               ('--cache-dir / cache_dir', self.cache_dir)):
            if folder is not None and str(folder).strip() == '':
                raise ValueError(f'{option} is empty: it would name the current folder. Fix: '
                                 'give a folder path, e.g. datasets/my-data')
        self.name = self.name or self.root.resolve().name
        if self.split not in SPLIT_MODES:
            raise ValueError(f'split must be one of {SPLIT_MODES}, got {self.split!r}')
        ratios = _check_ratios(self.ratios)
        if self.split == 'temporal' and self.time_col is None:
            raise ValueError("split='temporal' needs the timestamp column: pass --time-col / "
                             'time_col=NAME')
        if self.min_rating is not None and self.rating_col is None:
            raise ValueError('min_rating needs the rating column: pass --rating-col / '
                             'rating_col=NAME')
        if self.kcore < 0:
            raise ValueError(f'kcore must be >= 0, got {self.kcore}')
        self.text_cols = list(self.text_cols or [])
        if (self.text_cols or self.image_col) and self.items is None:
            raise ValueError('text and image features come from the item table: pass --items '
                             '/ items=FILE')
        if self.text_template is not None and not self.text_cols:
            raise ValueError('text_template needs the text columns: pass --text-cols / '
                             'text_cols')
        return ratios


def build_dataset(interactions: BuildRequest | str | PathLike | Table | Mapping,
                  output: str | PathLike | None = None,
                  items: str | PathLike | Table | Mapping | None = None,
                  **options) -> BuildResult:
    r"""Build a dataset folder in the library's raw format from an interaction table and an
    item table (see the module docstring for the steps and the layout).

    Args:
        interactions (BuildRequest, str, PathLike, Table or dict): every option as one
            :class:`BuildRequest`; or the interaction table, with :obj:`output`,
            :obj:`items` and the other fields of :class:`BuildRequest` as keyword arguments
            (their meaning and defaults are listed there).
        output (str or PathLike): the dataset folder to write (not with a request).
        items (str, PathLike, Table or dict, optional): the item table (not with a request).
        **options: the other fields of :class:`BuildRequest` (not with a request).

    Returns:
        BuildResult: the folder, its statistics and the counts of each step.

    Example:
        >>> result = build_dataset('ratings.csv', 'datasets/my-data', items='movies.csv',
        ...                        rating_col='rating', min_rating=4, kcore=5,
        ...                        text_cols=['title', 'genres'])
        >>> dataset = load_dataset('datasets/my-data')
    """
    if isinstance(interactions, BuildRequest):
        if output is not None or items is not None or options:
            raise TypeError('build_dataset takes a BuildRequest alone: set the other options '
                            'as its fields (dataclasses.replace(request, ...))')
        request = replace(interactions)  # check() fills in defaults: not in the caller's
    elif output is None:
        raise TypeError('build_dataset needs the output folder: build_dataset(interactions, '
                        'output, ...), or a BuildRequest')
    else:
        request = BuildRequest(interactions, output, items, **options)
    _, val_ratio, test_ratio = request.check()
    _prepare_output(request.root, request.overwrite)
    pairs = _read_interactions(request)
    item_table, catalog = _read_item_table(request, pairs)
    _keep_positives(request, pairs)
    _merge_repeated(pairs)
    _kcore(request, pairs)
    _index(pairs)
    splits = _split(request, pairs, val_ratio, test_ratio)
    cached = _cache_files(request)
    try:
        features, encoded, modality_info = _features(request, pairs, item_table, catalog)
        info = _build_info(request, pairs, item_table, features, modality_info)
        stats = _write_checked(request, pairs, splits, features, info)
    except BaseException as err:
        _note_kept_cache(err, request, cached)
        raise
    return BuildResult(request.root, stats, pairs.counts, encoded)


def _cache_dir(request: BuildRequest) -> Path:
    r = request
    return Path(r.cache_dir).expanduser() if r.cache_dir is not None else r.root / 'cache'


def _cache_files(request: BuildRequest) -> set[Path]:
    folder = _cache_dir(request)
    return set(folder.glob('*.npy')) if folder.is_dir() else set()


def _note_kept_cache(err: BaseException, request: BuildRequest, before: set[Path]) -> None:
    """A build that fails after encoding keeps the encoder outputs for the retry (encoding can
    take hours); the error says so, and how to undo it."""
    new = sorted(_cache_files(request) - before)
    if new:
        err.add_note(f'(the encoder outputs computed before the failure were kept for the '
                     f'retry: {len(new)} file(s) in {_cache_dir(request)}; delete them to undo)')


# --------------------------------------------------------------------------------------------
# The stages of build_dataset, in order
# --------------------------------------------------------------------------------------------

@dataclass
class _Interactions:
    r"""The interaction rows a build keeps, updated stage by stage.

    ``users`` / ``items`` hold the original ids (:func:`_read_interactions`), then codes into
    the sorted unique ids ``user_ids`` / ``item_ids`` (:func:`_merge_repeated`), then the
    dataset's indices, ``user_ids`` / ``item_ids`` becoming the original id of each index
    (:func:`_index`). ``rows`` is each row's position in the table, ``times`` its timestamp
    (when the table has them) and ``counts`` what each stage removed.
    """
    table: Table
    users: np.ndarray
    items: np.ndarray
    rows: np.ndarray
    times: np.ndarray | None
    counts: dict
    keep: np.ndarray
    user_ids: np.ndarray | None = None
    item_ids: np.ndarray | None = None

    def take(self, index: np.ndarray) -> None:
        """Keep the rows ``index`` (a mask or positions) of every per-row array."""
        self.users, self.items, self.rows = self.users[index], self.items[index], \
            self.rows[index]
        self.times = self.times[index] if self.times is not None else None

    @property
    def num_users(self) -> int:
        return int(self.user_ids.size)

    @property
    def num_items(self) -> int:
        return int(self.item_ids.size)


def _read_interactions(request: BuildRequest) -> _Interactions:
    """Read the interaction table: ids, timestamps, and which rows reach the minimum rating."""
    r = request
    inter = _as_table(r.interactions, [r.user_col, r.item_col, r.rating_col, r.time_col], r.sep)
    users = _ids(inter, r.user_col, '--user-col')
    item_ids = _ids(inter, r.item_col, '--item-col')
    if inter.num_rows == 0:
        raise DatasetFormatError(inter.source, 'rows', 'the table has no interaction',
                                 'give one row per (user, item) interaction')
    counts: dict = {'rows': int(inter.num_rows)}
    times = _timestamps(inter, r.time_col, '--time-col') if r.time_col else None
    keep = np.ones(inter.num_rows, dtype=bool)
    if r.rating_col is not None:
        ratings = _numbers(inter, r.rating_col, '--rating-col', 'rating')
        if r.min_rating is not None:
            keep = ratings >= float(r.min_rating)
            counts['below_min_rating'] = int((~keep).sum())
    return _Interactions(inter, users, item_ids, np.arange(inter.num_rows), times, counts, keep)


def _read_item_table(request: BuildRequest, pairs: _Interactions
                     ) -> tuple[Table | None, np.ndarray | None]:
    """Read the item table (when given) and check that it has one row per item and a row for
    every item of the interaction table; returns the table and its item ids."""
    if request.items is None:
        return None, None
    id_col = request.id_col
    item_table = _as_table(request.items, [id_col, *request.text_cols, request.image_col],
                           request.sep)
    catalog = _ids(item_table, id_col, '--item-id-col')
    uniq, first, n = np.unique(catalog, return_index=True, return_counts=True)
    if (n > 1).any():
        k = int(first[np.flatnonzero(n > 1)[0]])
        raise DatasetFormatError(
            item_table.source, f'column "{id_col}"',
            f'{int((n > 1).sum())} item id(s) appear on more than one row (first: '
            f'{str(catalog[k])!r} at {item_table.where(k)})', 'give each item one row')
    missing = np.setdiff1d(np.unique(pairs.items), uniq)
    if missing.size:
        raise DatasetFormatError(
            pairs.table.source, f'column "{request.item_col}"',
            f'{missing.size} item id(s) have no row in the item table {item_table.source} '
            f'(column "{id_col}"): {_examples(missing)}',
            'add those items to the item table, remove their interactions, or name the '
            'matching id columns with --item-col / --item-id-col')
    return item_table, catalog


def _keep_positives(request: BuildRequest, pairs: _Interactions) -> None:
    """Drop the rows below the minimum rating."""
    pairs.take(pairs.keep)
    if pairs.users.size == 0:
        raise DatasetFormatError(pairs.table.source, f'column "{request.rating_col}"',
                                 f'no row has a rating >= {request.min_rating}',
                                 'lower --min-rating / min_rating')


def _merge_repeated(pairs: _Interactions) -> None:
    """Code the ids and keep one row per (user, item) pair: the latest by timestamp, else
    the first."""
    pairs.user_ids, u_code = np.unique(pairs.users, return_inverse=True)
    pairs.item_ids, i_code = np.unique(pairs.items, return_inverse=True)
    pairs.users, pairs.items = u_code, i_code
    pair = u_code.astype(np.int64) * len(pairs.item_ids) + i_code
    latest = pairs.times if pairs.times is not None else -pairs.rows.astype(np.float64)
    order = np.lexsort((latest, pair))
    last_of_pair = np.r_[pair[order][1:] != pair[order][:-1], True]
    chosen = np.sort(order[last_of_pair])
    pairs.counts['duplicates'] = int(pair.size - chosen.size)
    pairs.take(chosen)


def _kcore(request: BuildRequest, pairs: _Interactions) -> None:
    """Drop users and items with fewer than ``kcore`` interactions, repeatedly."""
    kcore = request.kcore
    if kcore <= 1:
        return
    u_code, i_code = pairs.users, pairs.items
    core = kcore_filter(u_code, i_code, kcore)
    pairs.counts.update(
        kcore=int(kcore), kcore_interactions=int((~core).sum()),
        kcore_users=int(np.unique(u_code).size - np.unique(u_code[core]).size),
        kcore_items=int(np.unique(i_code).size - np.unique(i_code[core]).size))
    if not core.any():
        raise DatasetFormatError(pairs.table.source, 'interactions',
                                 f'the {kcore}-core is empty: no user and item have '
                                 f'{kcore} interactions together', 'lower --kcore / kcore')
    pairs.take(core)


def _reindex(uniq: np.ndarray, code: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The original ids still used, in natural order, and each code's index among them."""
    used = np.unique(code)
    orig = uniq[used][_natural_order(uniq[used])]
    lookup = np.full(uniq.size, -1, dtype=np.int64)
    lookup[np.searchsorted(uniq, orig)] = np.arange(orig.size)
    return orig, lookup[code]


def _index(pairs: _Interactions) -> None:
    """Index users and items by their sorted original ids."""
    pairs.user_ids, pairs.users = _reindex(pairs.user_ids, pairs.users)
    pairs.item_ids, pairs.items = _reindex(pairs.item_ids, pairs.items)


def _split(request: BuildRequest, pairs: _Interactions, val_ratio: float,
           test_ratio: float) -> dict[str, dict[int, list[int]]]:
    """Split each user's interactions into train / val / test (at random, or the latest
    held out); returns ``{split: {user: sorted items}}``."""
    u_idx, i_idx = pairs.users, pairs.items
    if request.split == 'random':
        canonical = np.lexsort((i_idx, u_idx))  # keys independent of the table's row order
        key = np.empty(u_idx.size)
        key[canonical] = np.random.default_rng(request.seed).random(u_idx.size)
    else:  # latest first; ties: the later row first
        key = np.lexsort((-pairs.rows, -pairs.times)).argsort().astype(np.float64)
    assign = split_per_user(u_idx, key, pairs.num_users, val_ratio, test_ratio)
    splits: dict[str, dict[int, list[int]]] = {}
    for s, code in (('train', 0), ('val', 1), ('test', 2)):
        m = assign == code
        if not m.any():
            raise DatasetFormatError(
                pairs.table.source, 'interactions', f'the {s} split is empty: every user has '
                'too few interactions to hold one out with ratios '
                f'{tuple(float(r) for r in request.ratios)}',
                'raise --kcore (5 gives every user a val and a test item at 8:1:1) or the '
                'held-out ratios')
        su, si = u_idx[m], i_idx[m]
        o = np.lexsort((si, su))
        su, si = su[o], si[o]
        bounds = np.flatnonzero(np.r_[True, su[1:] != su[:-1], True])
        splits[s] = {int(su[a]): si[a:b].tolist() for a, b in zip(bounds[:-1], bounds[1:])}
    n_user = np.bincount(u_idx, minlength=pairs.num_users)
    val_n, test_n = heldout_counts(n_user, val_ratio, test_ratio)
    pairs.counts['users_train_only'] = int(((val_n + test_n) == 0).sum())
    return splits


def _encoders(request: BuildRequest, texts: list[str] | None, paths: list[Path] | None
              ) -> tuple[dict[str, Callable], dict[str, dict]]:
    """The encoder of each modality that has inputs, and its ``build_info.json`` entry."""
    r = request
    encoders: dict[str, Callable] = {}
    modality_info: dict[str, dict] = {}
    if texts is not None:
        encoders['text'] = r.text_encoder
        if r.text_encoder is None or isinstance(r.text_encoder, (str, PathLike)):
            encoders['text'] = SentenceEncoder(r.text_encoder, batch_size=r.batch_size,
                                               device=r.device, progress=r.progress)
        modality_info['text'] = {'columns': r.text_cols, 'template': r.text_template}
    if paths is not None:
        encoders['image'] = r.image_encoder
        if r.image_encoder is None:
            encoders['image'] = torchvision_image_encoder(
                r.image_model, r.image_weights, batch_size=r.batch_size, device=r.device,
                progress=r.progress)
        modality_info['image'] = {'column': r.image_col}
    return encoders, modality_info


def _features(request: BuildRequest, pairs: _Interactions, item_table: Table | None,
              catalog: np.ndarray | None
              ) -> tuple[dict[str, np.ndarray], dict[str, str], dict[str, dict]]:
    """Encode the item texts and images (through the encoder cache): returns the features
    (``image`` first), how each was obtained, and each modality's ``build_info.json`` entry.
    The inputs and encoders are all checked first, so a bad row or model stops the build
    before any encoding."""
    if item_table is None:
        return {}, {}, {}
    r = request
    cache = _cache_dir(r)
    row_of = dict(zip(catalog.tolist(), range(catalog.size)))
    item_rows = [row_of[i] for i in pairs.item_ids.tolist()]
    pairs.counts['catalog_items_unused'] = int(catalog.size - pairs.num_items)
    texts = item_texts(item_table, r.text_cols, r.text_template, item_rows, r.id_col) \
        if r.text_cols else None
    paths = _image_paths(item_table, r.image_col, r.image_root, item_rows, r.id_col) \
        if r.image_col else None
    encoders, modality_info = _encoders(r, texts, paths)
    features: dict[str, np.ndarray] = {}
    encoded: dict[str, str] = {}
    for m, inputs in (('text', texts), ('image', paths)):
        if inputs is None:
            continue
        enc = encoders[m]
        features[m], hit = encode_cached(enc, inputs, m, cache)
        encoded[m] = f'read from cache {hit}' if hit else f'encoded with {enc!r}'
        modality_info[m]['encoder'] = repr(enc)
    features = {m: features[m] for m in ('image', 'text') if m in features}
    return features, encoded, modality_info


def _build_info(request: BuildRequest, pairs: _Interactions, item_table: Table | None,
                features: dict[str, np.ndarray], modality_info: dict[str, dict]) -> dict:
    """The content of ``build_info.json`` (without the statistics, added once read back)."""
    r = request
    sources = r.sources or {'interactions': pairs.table.source,
                            **({'items': item_table.source} if item_table else {})}
    return {
        'name': r.name,
        'sources': dict(sources),
        'options': {'user_col': r.user_col, 'item_col': r.item_col, 'rating_col': r.rating_col,
                    'time_col': r.time_col, 'item_id_col': r.item_id_col,
                    'text_cols': r.text_cols, 'text_template': r.text_template,
                    'image_col': r.image_col, 'min_rating': r.min_rating, 'kcore': r.kcore,
                    'split': r.split, 'ratios': [float(x) for x in r.ratios], 'seed': r.seed},
        'modalities': {m: {'dim': int(f.shape[1]), **modality_info[m]}
                       for m, f in features.items()},
        'counts': pairs.counts,
    }


def _write_checked(request: BuildRequest, pairs: _Interactions,
                   splits: dict[str, dict[int, list[int]]], features: dict[str, np.ndarray],
                   info: dict) -> dict:
    """Write the folder into a sibling staging folder, read it back, check it, then swap it
    in with renames: a failure (a full disk, a kill) leaves the dataset already in the output
    folder as it was. Returns the statistics of the data read back."""
    root, num_users, num_items = request.root, pairs.num_users, pairs.num_items
    id_map = {'user_column': request.user_col, 'item_column': request.item_col,
              'users': dict(zip(pairs.user_ids.tolist(), range(num_users))),
              'items': dict(zip(pairs.item_ids.tolist(), range(num_items)))}
    stage = _staging_dir(root)
    try:
        _write_output(stage, splits, features, id_map, info)
        data = read_mmssl_folder(stage / 'raw', list(features), request.name)
        stats = dataset_stats(data)
        expected = {s: sum(map(len, splits[s].values())) for s in splits}
        if (stats['users'], stats['items']) != (num_users, num_items) or \
                any(stats[s] != expected[s] for s in expected):
            raise RuntimeError(f'{root}: the folder read back ({stats}) differs from what was '
                               f'built ({num_users} users, {num_items} items, {expected}); '
                               'please report this bug')
        info['stats'] = {k: v for k, v in stats.items() if k != 'name'}
        _write_info(stage, info)
        _prepare_output(root, request.overwrite)  # again: another may have written meanwhile
        _swap_in(stage, root)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return stats
