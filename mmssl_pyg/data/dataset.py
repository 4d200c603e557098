r"""PyG :class:`~torch_geometric.data.InMemoryDataset` loaders for MMSSL-format data.

Every dataset builds one :class:`~torch_geometric.data.HeteroData`:

.. code-block:: none

    data['user'].num_nodes                      number of users
    data['item'].num_nodes                      number of items
    data['item'].<modality>_feat                [num_items, d_m] float32, one per modality
    data['user', 'interacts', 'item']
        .edge_index                             [2, E_train] training (user, item) pairs
        .val_edge_index                         [2, E_val]   validation pairs
        .test_edge_index                        [2, E_test]  test pairs
    data['item', 'rev_interacts', 'user']
        .edge_index                             [2, E_train] the training pairs reversed
    data.modalities                             list of modality names, in order ([] if none)
    data.name                                   dataset name ('tiktok', 'amazon-baby', ...)

Pairs are sorted by (user, item); duplicates are kept (and reported). Nothing is dense:
the sparsity in :meth:`MMSSLDataset.stats` is computed from counts.
:meth:`mmssl_pyg.data.graph.RecGraph.from_hetero` turns the object into the view that models
and the trainer take.
"""
from __future__ import annotations

import os
import os.path as osp
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import HeteroData, InMemoryDataset
from torch_geometric.io import fs

from ..utils.io import clean_stale_tmp
from .cache import (
    ProcessedCacheError,
    changed_files,
    fingerprint_digest,
    load_processed,
    raw_fingerprint,
    save_processed,
)
from .graph import EDGE, FEAT_SUFFIX, ITEM, REV_EDGE, USER, modality_features
from .readers import (
    FEATURE_FILE,
    RAW_FORMATS,
    SPLITS,
    SplitPairs,
    modality_from_file,
    read_features,
    read_json_split,
    read_sparse_matrix,
)
from .validation import (
    DatasetFormatError,
    DatasetNotFoundError,
    check_feature_rows,
    check_id_range,
    check_id_span,
    check_nonempty,
    report_duplicates_and_overlaps,
)

#: Modalities come in this order when they are discovered from file names (others follow,
#: alphabetically).
MODALITY_ORDER = ('image', 'text', 'audio')


# --------------------------------------------------------------------------------------------
# Raw folders
# --------------------------------------------------------------------------------------------

def order_modalities(names: Iterable[str]) -> list[str]:
    """Sort modality names: ``image``, ``text``, ``audio`` first, then the rest by name."""
    rank = {m: i for i, m in enumerate(MODALITY_ORDER)}
    return sorted(set(names), key=lambda m: (rank.get(m, len(rank)), m))


def available_modalities(raw_dir: str | PathLike) -> list[str]:
    """Modalities with a ``<name>_feat.npy`` file in ``raw_dir``, in :data:`MODALITY_ORDER`."""
    raw = Path(raw_dir)
    if not raw.is_dir():
        return []
    return order_modalities(m for p in raw.iterdir()
                            if (m := modality_from_file(p.name)) is not None)


def detect_raw_format(raw_dir: str | PathLike) -> str:
    """Which split layout ``raw_dir`` holds: ``'json'``, ``'pkl'`` or ``'train_mat'``.

    ``train.json`` wins when several are present; an empty folder counts as ``'json'``.
    """
    raw = Path(raw_dir)
    if (raw / 'train.json').exists():
        return 'json'
    if (raw / 'trnMat.pkl').exists():
        return 'pkl'
    if (raw / 'train_mat').exists():
        return 'train_mat'
    return 'json'


def resolve_raw_dir(root: str | PathLike) -> Path:
    """``root/raw`` (the PyG layout), or ``root`` itself when it holds the split files directly
    (the layout of the release archives, e.g. ``MMSSL/data/tiktok/train.json``)."""
    root = Path(root)
    if not (root / 'raw').is_dir() and any(
            (root / f).is_file() for f in ('train.json', 'trnMat.pkl', 'train_mat')):
        return root
    return root / 'raw'


def _sorted_edge_index(pairs: SplitPairs) -> torch.Tensor:
    order = np.lexsort((pairs.items, pairs.users))
    return torch.from_numpy(np.stack([pairs.users[order], pairs.items[order]]))


def build_hetero_data(train: torch.Tensor, val: torch.Tensor, test: torch.Tensor,
                      num_users: int, num_items: int,
                      features: dict[str, torch.Tensor] | None = None,
                      name: str = 'custom') -> HeteroData:
    r"""Assemble the :class:`HeteroData` layout of this module from tensors.

    Args:
        train, val, test (torch.Tensor): ``[2, E]`` (user, item) pairs of each split.
        num_users (int): number of users.
        num_items (int): number of items.
        features (dict[str, torch.Tensor], optional): ``{modality: [num_items, d]}``, in
            order. (default: :obj:`None`, no modality)
        name (str, optional): the dataset name. (default: :obj:`'custom'`)
    """
    features = features or {}
    data = HeteroData()
    data[USER].num_nodes = int(num_users)
    data[ITEM].num_nodes = int(num_items)
    for modality, feat in features.items():
        data[ITEM][modality + FEAT_SUFFIX] = feat.float()
    data[EDGE].edge_index = train.long()
    data[EDGE].val_edge_index = val.long()
    data[EDGE].test_edge_index = test.long()
    data[REV_EDGE].edge_index = train.long().flip(0)
    data.modalities = list(features)
    data.name = name
    return data


def read_mmssl_folder(raw_dir: str | PathLike, modalities: Sequence[str] | None = None,
                      name: str = 'custom', raw_format: str | None = None) -> HeteroData:
    r"""Read and validate a raw MMSSL/LATTICE/DiffMM folder into one :class:`HeteroData`.

    The item count is the row count of the feature files when a modality is loaded (all
    files must agree), else the column count of the pickled matrices, else one more than the
    largest item id of all splits. The user count is the row count of the pickled matrices,
    else one more than the largest user id of all splits. Problems raise
    :class:`~mmssl_pyg.data.validation.DatasetFormatError`; duplicates within a split and
    pairs shared between splits are kept and reported with :func:`warnings.warn`.

    Args:
        raw_dir (str or PathLike): the folder holding the split and feature files.
        modalities (list[str], optional): modalities to load, in order; :obj:`None` loads
            every ``<name>_feat.npy`` present, ``[]`` none. (default: :obj:`None`)
        name (str, optional): recorded as ``data.name``. (default: :obj:`'custom'`)
        raw_format (str, optional): ``'json'``, ``'train_mat'`` or ``'pkl'``; detected when
            :obj:`None` (see :func:`detect_raw_format`). (default: :obj:`None`)

    Example:
        >>> data = read_mmssl_folder('datasets/tiktok/raw', modalities=['image'])
        >>> data['item'].image_feat.shape
        torch.Size([6710, 128])
    """
    raw = Path(raw_dir)
    fmt = raw_format or detect_raw_format(raw)
    if fmt not in RAW_FORMATS:
        raise ValueError(f'raw_format must be one of {sorted(RAW_FORMATS)}, got {fmt!r}')
    if modalities is None:
        modalities = available_modalities(raw)
    files = {s: raw / f for s, f in RAW_FORMATS[fmt].items()}
    splits = {s: read_json_split(p) if p.suffix == '.json' else read_sparse_matrix(p)
              for s, p in files.items()}
    for s, pairs in splits.items():
        check_nonempty(pairs.path, s, pairs.num_pairs)

    feats = {m: read_features(raw / FEATURE_FILE.format(m)) for m in modalities}

    # Node counts: features fix the items, matrices fix both, else the largest ids do.
    shapes = {s: p.shape for s, p in splits.items() if p.shape is not None}
    if len(set(shapes.values())) > 1:
        listing = ', '.join(f'{files[s].name}: {u} x {i}' for s, (u, i) in shapes.items())
        raise DatasetFormatError(raw, 'shape', f'the split matrices disagree ({listing})',
                                 'save every split as a num_users x num_items matrix')
    shape = next(iter(shapes.values()), None)
    users_from = None
    if feats:
        num_items = check_feature_rows({FEATURE_FILE.format(m): f.shape[0]
                                        for m, f in feats.items()}, raw)
        items_from = f'the rows of {FEATURE_FILE.format(next(iter(feats)))}'
        if shape is not None and shape[1] != num_items:
            s = next(iter(shapes))
            raise DatasetFormatError(
                files[s], 'shape', f'the matrix has {shape[1]} item columns but the feature '
                f'files have {num_items} rows', 'the feature files need one row per item '
                'column of the interaction matrices; use the files of one release together')
    elif shape is not None:
        num_items = shape[1]
        items_from = f'the columns of {files[next(iter(shapes))].name}'
    else:
        num_items = 1 + max(int(p.items.max()) for p in splits.values())
        items_from = 'the largest item id of all splits (no feature file loaded)'
    if shape is not None:
        num_users = shape[0]
        users_from = f'the rows of {files[next(iter(shapes))].name}'
    else:
        num_users = 1 + max(int(p.users.max()) for p in splits.values())
    for pairs in splits.values():
        check_id_range(pairs.path, pairs.users, pairs.items, num_users, num_items,
                       items_from, users_from)
    check_id_span(raw, 'user', num_users, np.concatenate([p.users for p in splits.values()]),
                  users_from or 'the largest user id', users_from and 'matrix')
    check_id_span(raw, 'item', num_items, np.concatenate([p.items for p in splits.values()]),
                  items_from, 'features' if feats else shape is not None and 'matrix' or None)

    report_duplicates_and_overlaps(
        {s: (p.users, p.items) for s, p in splits.items()}, num_items,
        {s: str(files[s]) for s in splits}, stacklevel=3)

    edges = {s: _sorted_edge_index(p) for s, p in splits.items()}
    data = build_hetero_data(edges['train'], edges['val'], edges['test'], num_users,
                             num_items, {m: torch.from_numpy(f) for m, f in feats.items()},
                             name)
    stored = {'train': data[EDGE].edge_index, 'val': data[EDGE].val_edge_index,
              'test': data[EDGE].test_edge_index}
    for s in SPLITS:  # nothing may be lost between the raw files and the stored graph
        if stored[s].size(1) != splits[s].num_pairs:
            raise RuntimeError(f'{files[s]}: read {splits[s].num_pairs} pairs but stored '
                               f'{stored[s].size(1)}; please report this bug')
    return data


def raw_files_missing(root: str | PathLike, modalities: Sequence[str] = ()) -> list[str]:
    """Names of the files a dataset folder lacks (split files of its layout, then features)."""
    raw = resolve_raw_dir(root)
    expected = list(RAW_FORMATS[detect_raw_format(raw)].values())
    expected += [FEATURE_FILE.format(m) for m in modalities]
    return [f for f in expected if not (raw / f).is_file()]


# --------------------------------------------------------------------------------------------
# Dataset descriptions (the paper's Table 1 and where the files come from)
# --------------------------------------------------------------------------------------------

_MMSSL_DRIVE = ('MMSSL release, https://github.com/HKUDS/MMSSL: README "Datasets" -> Google '
                'Drive https://drive.google.com/drive/folders/1AB1RsnU-ETmubJgWLpJrXd8TjaK_eTp0 '
                '(train/val/test.json, train_mat, *_feat.npy per dataset)')
_LATTICE = ('LATTICE release, https://github.com/CRIPAC-DIG/LATTICE: processed data on Google '
            'Drive https://drive.google.com/drive/folders/1sFg9W2wCexWahjqtN6MVc4f4dMj5hyFp, or '
            'build it with data/build_data.py from the Amazon 2014 5-core reviews')
_DIFFMM = ('DiffMM release, https://github.com/HKUDS/DiffMM: Datasets/{folder}/ (trnMat.pkl, '
           'valMat.pkl, tstMat.pkl, *_feat.npy{extra})')


@dataclass(frozen=True)
class DatasetInfo:
    r"""What a named dataset should contain, from the MMSSL paper's Table 1.

    Attributes:
        name (str): registry name, e.g. ``'amazon-baby'``.
        title (str): name in the paper, e.g. ``'Amazon-Baby'``.
        users, items, interactions (int): Table 1 figures.
        modality_dims (tuple[tuple[str, int], ...]): ``(modality, dim)`` loaded by default.
        sources (tuple[str, ...]): where the raw files can be obtained.
        note (str): anything a user should know about the available copies.
    """
    name: str
    title: str
    users: int
    items: int
    interactions: int
    modality_dims: tuple[tuple[str, int], ...]
    sources: tuple[str, ...]
    note: str = ''


TIKTOK_INFO = DatasetInfo(
    'tiktok', 'TikTok', 9319, 6710, 59541, (('image', 128), ('audio', 128)),
    ('bundled with this repository in datasets/tiktok/raw (from HKUDS/DiffMM @ fae20e6)',
     _DIFFMM.format(folder='tiktok', extra=''), _MMSSL_DRIVE),
    'The bundled copy has 9,308 users (the paper reports 9,319). The paper\'s 768-d text '
    'features are not in it; a text_feat.npy placed in raw/ is picked up.')
TIKTOK_MINI_INFO = DatasetInfo(
    'tiktok-mini', 'TikTok-mini', 1000, 2872, 6227, (('image', 128), ('audio', 128)),
    ('bundled with this repository in datasets/tiktok-mini/raw (1,000 TikTok users, seed 0)',),
    'Not in the paper: a 1,000-user sample of TikTok for quick runs and tests.')
AMAZON_BABY_INFO = DatasetInfo(
    'amazon-baby', 'Amazon-Baby', 19445, 7050, 139110, (('image', 4096), ('text', 1024)),
    (_MMSSL_DRIVE, _LATTICE,
     _DIFFMM.format(folder='baby', extra='; unzip image_feat.npy.zip')),
    'The interactions alone are bundled in datasets/amazon-baby-interactions '
    "(load_dataset('amazon-baby-interactions'), no modality).")
AMAZON_SPORTS_INFO = DatasetInfo(
    'amazon-sports', 'Amazon-Sports', 35598, 18357, 256308, (('image', 4096), ('text', 1024)),
    (_MMSSL_DRIVE, _LATTICE,
     _DIFFMM.format(folder='sports', extra='; sports is on the Google Drive link of '
                    'Datasets/README.md')),
    'The interactions alone are bundled in datasets/amazon-sports-interactions '
    "(load_dataset('amazon-sports-interactions'), no modality).")
ALLRECIPES_INFO = DatasetInfo(
    'allrecipes', 'Allrecipes', 19805, 10067, 58922, (('image', 2048), ('text', 20)),
    (_MMSSL_DRIVE,),
    'The text modality is 20 sampled ingredients per recipe.')


MOVIELENS_100K_INFO = DatasetInfo(
    'movielens-100k', 'MovieLens-100K', 938, 1008, 54413, (('text', 384),),
    ('built on your machine from the copy inside the recbole wheel: make movielens-100k, or '
     "pip install -e '.[features]' && pip install --no-deps recbole==1.2.1 && "
     'mmssl-pyg build-dataset --recipe movielens-100k (see mmssl_pyg/data/recipes.py)',),
    'Not in the paper. Ratings >= 4 as positives, 5-core, per-user random 8:1:1 split (seed 0), '
    'text = title, year and genres encoded with all-MiniLM-L6-v2. The MovieLens terms forbid '
    'redistribution: the data is never committed.')


# --------------------------------------------------------------------------------------------
# The datasets
# --------------------------------------------------------------------------------------------

def default_root(folder: str) -> Path:
    r"""Default root of a bundled dataset: the repository's ``datasets/<folder>``.

    The repository's ``datasets/`` folder (found relative to this package) is used when it
    holds ``<folder>`` or when ``./datasets/<folder>`` does not exist; otherwise
    ``./datasets/<folder>`` (for an installed package run from a checkout or data folder).
    """
    repo = Path(__file__).resolve().parents[2] / 'datasets'
    cwd = Path.cwd() / 'datasets'
    for base in (repo, cwd):
        if (base / folder).is_dir():
            return base / folder
    return (repo if repo.is_dir() else cwd) / folder


class MMSSLDataset(InMemoryDataset):
    r"""A multi-modal recommendation dataset in the MMSSL / LATTICE release format.

    The raw folder holds ``train.json``, ``val.json`` and ``test.json`` (a JSON object mapping
    each user id string to its list of item ids) and one ``<modality>_feat.npy`` per
    modality (row :math:`i` = item :math:`i`; ``float16`` is cast to ``float32``). The MMSSL
    ``train_mat`` pickle may replace ``train.json``, and the DiffMM ``trnMat.pkl`` /
    ``valMat.pkl`` / ``tstMat.pkl`` pickled sparse matrices may replace all three JSON files.
    The raw files are read from ``root/raw``, or from ``root`` itself when it holds them
    directly (the layout of the release archives).

    :meth:`process` builds one :class:`~torch_geometric.data.HeteroData` (layout in
    :mod:`mmssl_pyg.data.dataset`): ``user`` and ``item`` nodes, training edges on
    ``('user', 'interacts', 'item')`` and its reverse, ``val_edge_index`` /
    ``test_edge_index`` on the forward edge type, ``data['item'][f'{m}_feat']`` for each
    modality, ``data.modalities`` and ``data.name``. A subset of modalities is read from the
    same raw files; the processed file name (``data_image+audio.pt``,
    ``data_no_features.pt``, ...) records the choice, so several subsets coexist.

    Malformed raw files raise :class:`~mmssl_pyg.data.validation.DatasetFormatError` naming
    the file, field and fix; missing ones raise
    :class:`~mmssl_pyg.data.validation.DatasetNotFoundError` listing every expected file
    (nothing is downloaded).

    Args:
        root (str): root directory; raw files in ``root/raw``, processed ones are written to
            ``root/processed``. Named subclasses default to the repository's
            ``datasets/<name>`` folder. (default: :obj:`None`)
        modalities (list[str], optional): modalities to load, in order. :obj:`None` loads the
            dataset's declared modalities plus every other ``<m>_feat.npy`` in the raw folder;
            ``[]`` loads the interactions only. (default: :obj:`None`)
        name (str, optional): recorded as ``data.name`` (picks presets). Defaults to the
            dataset's registry name, or the folder name for :class:`MMSSLDataset`.
            (default: :obj:`None`)
        raw_format (str, optional): ``'json'``, ``'train_mat'`` or ``'pkl'``; detected from
            the files when :obj:`None` (``train.json`` first). (default: :obj:`None`)
        transform (callable, optional): a function/transform that takes in a
            :class:`~torch_geometric.data.HeteroData` object and returns a transformed
            version, applied on every access. (default: :obj:`None`)
        pre_transform (callable, optional): as :obj:`transform`, applied once before the
            processed file is saved. (default: :obj:`None`)
        force_reload (bool, optional): whether to re-process the dataset.
            (default: :obj:`False`)
        log (bool, optional): whether to print progress while processing.
            (default: :obj:`True`)

    Example:
        >>> from mmssl_pyg.data import MMSSLDataset, RecGraph
        >>> dataset = MMSSLDataset('datasets/tiktok', modalities=['image'])
        >>> data = dataset[0]
        >>> data.modalities, data['item'].image_feat.shape
        (['image'], torch.Size([6710, 128]))
        >>> graph = RecGraph.from_hetero(data)
    """

    #: Table 1 description of a named dataset (``None`` for arbitrary folders).
    info: DatasetInfo | None = None

    def __init__(
        self,
        root: str | PathLike | None = None,
        modalities: Sequence[str] | None = None,
        name: str | None = None,
        raw_format: str | None = None,
        transform: Callable | None = None,
        pre_transform: Callable | None = None,
        force_reload: bool = False,
        log: bool = True,
    ) -> None:
        if root is None:
            if self.info is None:
                raise TypeError('MMSSLDataset needs root=<folder holding raw/ or the raw files>')
            root = default_root(self.info.name)
        if isinstance(modalities, str):
            modalities = [modalities]
        if modalities is not None:
            modalities = list(modalities)
            repeated = sorted({m for m in modalities if modalities.count(m) > 1})
            if repeated:
                raise ValueError(f'modalities lists {repeated} more than once: {modalities}')
        if raw_format is not None and raw_format not in RAW_FORMATS:
            raise ValueError(f'raw_format must be one of {sorted(RAW_FORMATS)}, '
                             f'got {raw_format!r}')
        self._requested_modalities = modalities
        self._modalities: list[str] | None = None
        self._raw_format = raw_format
        root = osp.expanduser(fs.normpath(str(root)))
        self.name = name or (self.info.name if self.info else Path(root).name)
        self._cache: dict | None = None
        super().__init__(root, transform, pre_transform, force_reload=force_reload, log=log)
        if self._cache is None:  # PyG skipped _process (never, while process() is defined)
            self._cache = self._read_cache(self.processed_paths[0])
        self._set_cache(self._cache)
        if getattr(self._data, 'name', None) != self.name:  # same files, another name
            self._data.name = self.name

    # ---- PyG hooks ----------------------------------------------------------------------

    @property
    def raw_dir(self) -> str:
        return str(resolve_raw_dir(self.root))

    @property
    def raw_format(self) -> str:
        """The split layout read: ``'json'``, ``'train_mat'`` or ``'pkl'``."""
        return self._raw_format or detect_raw_format(self.raw_dir)

    @property
    def modalities(self) -> list[str]:
        """The modalities this dataset loads, in order."""
        if self._modalities is None:
            if self._requested_modalities is not None:
                self._modalities = list(self._requested_modalities)
            else:
                declared = [m for m, _ in self.info.modality_dims] if self.info else []
                found = available_modalities(self.raw_dir)
                self._modalities = declared + [m for m in found if m not in declared]
        return list(self._modalities)

    @property
    def raw_file_names(self) -> list[str]:
        return (list(RAW_FORMATS[self.raw_format].values())
                + [FEATURE_FILE.format(m) for m in self.modalities])

    @property
    def processed_file_names(self) -> str:
        tag = '+'.join(self.modalities) or 'no_features'
        fmt = '' if self.raw_format == 'json' else f'{self.raw_format}_'
        return f'data_{fmt}{tag}.pt'

    def _download(self) -> None:
        # PyG's version creates raw/ before calling download(); nothing is ever downloaded
        # here, so a failed load leaves no empty folders behind.
        if not all(osp.isfile(p) for p in self.raw_paths):
            self.download()

    def download(self) -> None:
        missing = [f for f in self.raw_file_names
                   if not osp.isfile(osp.join(self.raw_dir, f))]
        raise DatasetNotFoundError(self.raw_dir, self._missing_message(missing), missing)

    def _process(self) -> None:
        # Replaces PyG's: that one unpickles processed/pre_transform.pt and pre_filter.pt
        # without weights_only and reuses a processed file whatever the raw files now hold.
        path = self.processed_paths[0]
        clean_stale_tmp(self.processed_dir)
        fingerprint = raw_fingerprint(self.raw_dir, self.raw_file_names)
        if not self.force_reload and osp.exists(path):
            cache = self._read_cache(path)
            reason = self._outdated(cache, fingerprint)
            if reason is None:
                self._cache = cache
                return
            if self.log and 'PYTEST_CURRENT_TEST' not in os.environ:
                print(f'Re-processing {path}: {reason}', file=sys.stderr)
        self._fingerprint = fingerprint
        if self.log and 'PYTEST_CURRENT_TEST' not in os.environ:
            print('Processing...', file=sys.stderr)
        self.process()

    def process(self) -> None:
        fingerprint = getattr(self, '_fingerprint', None) or raw_fingerprint(
            self.raw_dir, self.raw_file_names)
        data = read_mmssl_folder(self.raw_dir, self.modalities, self.name, self.raw_format)
        if self.pre_transform is not None:
            data = self.pre_transform(data)
        path = save_processed(self.processed_paths[0], data.to_dict(), fingerprint,
                              self._cache_key())
        self._cache = load_processed(path)

    def load(self, path: str, data_cls: type = HeteroData) -> None:
        """Load a processed file of this class (``weights_only``; see
        :func:`mmssl_pyg.data.cache.load_processed`)."""
        self._set_cache(self._read_cache(path))

    def _read_cache(self, path: str) -> dict | None:
        return load_processed(path)

    def _set_cache(self, cache: dict | None) -> None:
        if cache is None:
            raise ProcessedCacheError(self.processed_paths[0], 'not a processed cache of this '
                                      'version of mmssl-pyg')
        self._cache = cache
        self._data, self.slices = HeteroData.from_dict(cache['data']), None

    def _cache_key(self) -> dict:
        # the repr without memory addresses: '<function f>', the same in every process
        transform = re.sub(r' at 0x[0-9a-fA-F]+', '', repr(self.pre_transform))
        return {'raw_format': self.raw_format, 'modalities': self.modalities,
                'pre_transform': transform}

    def _outdated(self, cache: dict | None, fingerprint: dict) -> str | None:
        """Why a cache cannot be used (``None`` when it can)."""
        if cache is None:
            return 'written by another version'
        changed = changed_files(cache['fingerprint'], fingerprint)
        if changed:
            return f'raw file(s) changed since it was built: {", ".join(changed)}'
        if cache.get('key') != self._cache_key():
            return 'built with other options (raw_format, modalities or pre_transform)'
        return None

    @property
    def fingerprint(self) -> dict[str, dict]:
        """``{raw file name: {'size', 'mtime_ns', 'sha256'}}`` of the files this data was
        built from (see :mod:`mmssl_pyg.data.cache`)."""
        return dict(self._cache['fingerprint'])

    @property
    def data_digest(self) -> str:
        """One hash of the raw files' names and contents (independent of their folder)."""
        return fingerprint_digest(self._cache['fingerprint'])

    # ---- convenience --------------------------------------------------------------------

    @property
    def num_users(self) -> int:
        return int(self._data[USER].num_nodes)

    @property
    def num_items(self) -> int:
        return int(self._data[ITEM].num_nodes)

    def stats(self) -> dict:
        """Table 1 figures of the processed data; see :func:`dataset_stats`."""
        return dataset_stats(self._data)

    def __repr__(self) -> str:
        mods = ', '.join(getattr(self._data, 'modalities', None) or []) or 'none'
        return (f'{self.__class__.__name__}({self.name}, users={self.num_users}, '
                f'items={self.num_items}, train={self._data[EDGE].edge_index.size(1)}, '
                f'modalities=[{mods}])')

    def _missing_message(self, missing: list[str]) -> str:
        info = self.info
        title = info.title if info else self.name
        dims = dict(info.modality_dims) if info else {}
        users = f'{info.users:,}' if info else None
        items = f'{info.items:,}' if info else None
        lines = [f'{self.__class__.__name__} ({title}): raw files missing in {self.raw_dir}',
                 'Expected files:']
        width = max(len(f) for f in self.raw_file_names)
        for f in self.raw_file_names:
            state = 'MISSING' if f in missing else 'present'
            modality = modality_from_file(f)
            if modality is None:
                shape = ('JSON object user id -> list of item ids' if f.endswith('.json')
                         else 'pickled scipy.sparse matrix users x items')
                if users:
                    shape += f' ({users} users, {items} items)'
            else:
                rows = items.replace(',', '') if items else 'num_items'
                shape = f'float array [{rows}, {dims.get(modality, "dim")}] ({modality} features)'
            lines.append(f'  {f:<{width}}  {state:<7}  {shape}')
        if self.raw_format == 'json':
            lines.append('Instead of the three JSON files, the DiffMM pickles trnMat.pkl, '
                         'valMat.pkl, tstMat.pkl, or the MMSSL train_mat with val.json and '
                         'test.json, are accepted.')
        found = available_modalities(self.raw_dir)
        if found:
            present = ', '.join(FEATURE_FILE.format(m) for m in found)
            lines.append(f'Feature files present: {present} (choose with modalities=[...]).')
        if info:
            paper = ', '.join(f'{m} {d}-d' for m, d in info.modality_dims)
            lines.append(f'Paper (MMSSL, Table 1): {info.users:,} users, {info.items:,} items, '
                         f'{info.interactions:,} interactions, modalities: {paper}.')
            if info.note:
                lines.append(info.note)
            lines.append('Where to get them:')
            lines += [f'  - {s}' for s in info.sources]
        lines.append(f'Fix: place the files in {self.raw_dir} and load again (nothing is '
                     'downloaded), or load a subset with modalities=[...] (modalities=[] '
                     'needs only the split files).')
        return '\n'.join(lines)


class TikTok(MMSSLDataset):
    r"""The TikTok micro-video dataset of the `"Multi-Modal Self-Supervised Learning for
    Recommendation" <https://arxiv.org/abs/2302.10632>`_ (MMSSL) paper, bundled with this
    repository (9,308 users, 6,710 items, 59,541 / 3,051 / 6,130 train / val / test
    interactions; 128-d ``image`` and 128-d ``audio`` features, stored as ``float16``).

    The paper's 768-d text features are not in the bundled copy; a ``text_feat.npy`` placed
    in ``raw/`` is loaded as a third modality. Arguments as :class:`MMSSLDataset`; ``root``
    defaults to the repository's ``datasets/tiktok``.

    Example:
        >>> dataset = TikTok(root='datasets/tiktok')
        >>> dataset.stats()['train']
        59541
    """
    info = TIKTOK_INFO


class TikTokMini(MMSSLDataset):
    r"""A 1,000-user sample of :class:`TikTok` (2,872 items; 6,227 / 336 / 664 train / val /
    test interactions; ``image`` and ``audio`` features) for quick runs. ``raw/id_map.json``
    maps its ids back to TikTok's. Arguments as :class:`MMSSLDataset`; ``root`` defaults to
    the repository's ``datasets/tiktok-mini``.

    Example:
        >>> dataset = TikTokMini()
        >>> dataset.num_users, dataset.num_items
        (1000, 2872)
    """
    info = TIKTOK_MINI_INFO


class AmazonBaby(MMSSLDataset):
    r"""The Amazon-Baby dataset of the MMSSL paper (19,445 users, 7,050 items, 139,110
    interactions; 4096-d ``image`` and 1024-d ``text`` features).

    Its features cannot be downloaded here: place the raw files in ``root/raw`` (the error
    raised when they are missing lists each file, its shape, and the MMSSL, LATTICE and
    DiffMM releases that provide it). The interactions alone are bundled:
    ``AmazonBaby('datasets/amazon-baby-interactions', modalities=[])`` or
    ``load_dataset('amazon-baby-interactions')``. Arguments as :class:`MMSSLDataset`.

    Example:
        >>> dataset = AmazonBaby('datasets/amazon-baby-interactions', modalities=[])
        >>> dataset.stats()['users']
        19445
    """
    info = AMAZON_BABY_INFO


class AmazonSports(MMSSLDataset):
    r"""The Amazon-Sports dataset of the MMSSL paper (35,598 users, 18,357 items, 256,308
    interactions; 4096-d ``image`` and 1024-d ``text`` features). As :class:`AmazonBaby`; the
    interactions alone are bundled in ``datasets/amazon-sports-interactions``.

    Example:
        >>> dataset = AmazonSports('datasets/amazon-sports-interactions', modalities=[])
        >>> dataset.num_items
        18357
    """
    info = AMAZON_SPORTS_INFO


class Allrecipes(MMSSLDataset):
    r"""The Allrecipes dataset of the MMSSL paper (19,805 users, 10,067 items, 58,922
    interactions; 2048-d ``image`` features and 20-d ``text`` (ingredient) features). Not
    bundled and not downloadable here: place the raw files of the MMSSL release in
    ``root/raw``. Arguments as :class:`MMSSLDataset`.

    Example:
        >>> dataset = Allrecipes(root='data/allrecipes')  # raw files from the MMSSL release
    """
    info = ALLRECIPES_INFO


class MovieLens100K(MMSSLDataset):
    r"""MovieLens-100K with a ``text`` modality (384-d all-MiniLM-L6-v2 embeddings of each
    movie's title, year and genres): 938 users, 1,008 items, 43,421 / 5,496 / 5,496 train /
    val / test interactions (ratings >= 4, 5-core, per-user random 8:1:1 split, seed 0).

    Not bundled (the MovieLens terms forbid redistribution): build it once with
    ``mmssl-pyg build-dataset --recipe movielens-100k`` (see
    :func:`~mmssl_pyg.data.recipes.build_movielens_100k`). Arguments as
    :class:`MMSSLDataset`; ``root`` defaults to the repository's ``datasets/movielens-100k``.

    Example:
        >>> dataset = MovieLens100K()
        >>> dataset.num_users, dataset.num_items
        (938, 1008)
    """
    info = MOVIELENS_100K_INFO

    def _missing_message(self, missing: list[str]) -> str:
        root = Path(self.root)
        output = '' if root.resolve() == default_root(self.name).resolve() else \
            f' --output {root}'
        return (f'MovieLens-100K is not built yet in {root} (missing: {", ".join(missing)}). '
                'It is built on your machine, never downloaded or committed (the MovieLens '
                "terms forbid redistribution). Build it: pip install -e '.[features]' && "
                f'pip install --no-deps recbole==1.2.1 && mmssl-pyg build-dataset --recipe '
                f'movielens-100k{output}  (or, in a checkout, make movielens-100k)')


#: Registry names -> (class, default keyword arguments). The folder is the name.
DATASETS: dict[str, tuple[type[MMSSLDataset], dict]] = {
    'tiktok': (TikTok, {}),
    'tiktok-mini': (TikTokMini, {}),
    'amazon-baby': (AmazonBaby, {}),
    'amazon-sports': (AmazonSports, {}),
    'allrecipes': (Allrecipes, {}),
    'movielens-100k': (MovieLens100K, {}),
    'amazon-baby-interactions': (AmazonBaby, {'modalities': [],
                                              'name': 'amazon-baby-interactions'}),
    'amazon-sports-interactions': (AmazonSports, {'modalities': [],
                                                  'name': 'amazon-sports-interactions'}),
}


def _registry_key(name: str) -> str:
    return name.strip().lower().replace('_', '-')


def _is_path(name: str) -> bool:
    return osp.sep in name or '/' in name or name.startswith(('.', '~'))


def load_dataset(name: str, root: str | PathLike | None = None,
                 modalities: Sequence[str] | None = None, force_reload: bool = False,
                 **kwargs) -> MMSSLDataset:
    r"""Load a dataset by registry name or folder path.

    Args:
        name (str): one of ``'tiktok'``, ``'tiktok-mini'``, ``'amazon-baby'``,
            ``'amazon-sports'``, ``'allrecipes'``, ``'amazon-baby-interactions'``,
            ``'amazon-sports-interactions'``, ``'movielens-100k'`` (case and ``_``/``-`` do
            not matter), or the path to a folder in the MMSSL format (loaded with
            :class:`MMSSLDataset`).
        root (str, optional): the dataset's root folder. Defaults to the repository's
            ``datasets/<name>`` (see :func:`default_root`). Ignored when :obj:`name` is a
            path. (default: :obj:`None`)
        modalities (list[str], optional): modalities to load (see :class:`MMSSLDataset`);
            the ``*-interactions`` names default to ``[]``. (default: :obj:`None`)
        force_reload (bool, optional): whether to re-process. (default: :obj:`False`)
        **kwargs: further arguments of :class:`MMSSLDataset` (``transform``,
            ``pre_transform``, ``raw_format``, ``log``, ``name``).

    Raises:
        ValueError: when :obj:`name` is neither a known name nor a folder (the message lists
            the known names).

    Example:
        >>> dataset = load_dataset('tiktok-mini', modalities=['image'])
        >>> graph = RecGraph.from_hetero(dataset[0])
    """
    key = _registry_key(name)
    if key in DATASETS and not _is_path(name):
        cls, defaults = DATASETS[key]
        args = {**defaults, **kwargs}
        if modalities is not None:
            args['modalities'] = modalities
        return cls(root=root if root is not None else default_root(key),
                   force_reload=force_reload, **args)
    path = Path(name).expanduser()
    if path.is_dir():
        return MMSSLDataset(path, modalities=modalities, force_reload=force_reload, **kwargs)
    raise ValueError(f'unknown dataset {name!r}: not a known name and not a folder. Known '
                     f'names: {", ".join(DATASETS)}; or pass the path to a folder holding '
                     'train.json, val.json, test.json and <modality>_feat.npy files')


# --------------------------------------------------------------------------------------------
# Statistics (the paper's Table 1)
# --------------------------------------------------------------------------------------------

def dataset_stats(data: HeteroData) -> dict:
    r"""Table 1 figures of a dataset's :class:`HeteroData`.

    Returns:
        dict: ``name``, ``users``, ``items``, ``train``, ``val``, ``test``, ``interactions``
        (all three splits), ``sparsity`` (:math:`1 - |E_{train}| / (|U| |I|)`, from counts,
        no dense matrix) and ``modalities`` (``{name: dim}``, in order).

    Note:
        The paper's Table 1 counts train + test interactions for the Amazon datasets
        (139,110 = 118,551 + 20,559 for Amazon-Baby) and computes its sparsity from that
        total; here ``sparsity`` uses the training pairs only.
    """
    store = data[EDGE]
    users, items = int(data[USER].num_nodes), int(data[ITEM].num_nodes)
    train = int(store.edge_index.size(1))
    val, test = int(store.val_edge_index.size(1)), int(store.test_edge_index.size(1))
    return {
        'name': getattr(data, 'name', None) or 'custom',
        'users': users, 'items': items,
        'train': train, 'val': val, 'test': test, 'interactions': train + val + test,
        'sparsity': 1.0 - train / (users * items) if users * items else 0.0,
        'modalities': {m: int(f.size(-1)) for m, f in modality_features(data).items()},
    }


def _as_stats(obj) -> dict:
    if isinstance(obj, dict):
        return obj
    if isinstance(obj, MMSSLDataset):
        return obj.stats()
    if isinstance(obj, InMemoryDataset):
        return dataset_stats(obj[0])
    return dataset_stats(obj)


def format_stats(*items) -> str:
    r"""Format statistics as the paper's Table 1: one column per dataset.

    Args:
        *items: datasets, :class:`HeteroData` objects or :func:`dataset_stats` dicts (or one
            list of them).

    Example:
        >>> print(format_stats(load_dataset('tiktok-mini')))
                      tiktok-mini
        Users               1,000
        ...
    """
    if len(items) == 1 and isinstance(items[0], (list, tuple)):
        items = tuple(items[0])
    stats = [_as_stats(x) for x in items]
    modalities = order_modalities(m for s in stats for m in s['modalities'])
    rows: list[tuple[str, list[str]]] = [
        ('Users', [f"{s['users']:,}" for s in stats]),
        ('Items', [f"{s['items']:,}" for s in stats]),
        ('Train', [f"{s['train']:,}" for s in stats]),
        ('Val', [f"{s['val']:,}" for s in stats]),
        ('Test', [f"{s['test']:,}" for s in stats]),
        ('Interactions', [f"{s['interactions']:,}" for s in stats]),
        ('Sparsity (train)', [f"{100 * s['sparsity']:.3f}%" for s in stats]),
    ]
    rows += [(f'{m} dim', [str(s['modalities'].get(m, '-')) for s in stats])
             for m in modalities]
    if not modalities:
        rows.append(('Modalities', ['none'] * len(stats)))
    label_w = max(len(label) for label, _ in rows)
    col_w = [max(len(s['name']), *(len(vals[j]) for _, vals in rows))
             for j, s in enumerate(stats)]
    lines = [' ' * label_w + ''.join(f'  {s["name"]:>{w}}' for s, w in zip(stats, col_w))]
    lines += [f'{label:<{label_w}}' + ''.join(f'  {v:>{w}}' for v, w in zip(vals, col_w))
              for label, vals in rows]
    return '\n'.join(lines)


def print_stats(*items) -> None:
    """Print :func:`format_stats` of datasets, graphs or stats dicts."""
    print(format_stats(*items))


def datasets_command(names: list[str] | None = None,
                     root: str | PathLike | None = None, force_reload: bool = False) -> str:
    r"""The text of the ``mmssl-pyg datasets`` command.

    Args:
        names (list[str], optional): registry names or folder paths. Empty or :obj:`None`
            lists the known datasets and whether their raw files are present; otherwise the
            datasets are loaded (processed on first use) and their statistics formatted as
            Table 1. (default: :obj:`None`)
        root (str, optional): the folder holding one sub-folder per dataset (like the
            repository's ``datasets/``); :obj:`None` uses :func:`default_root`.
            (default: :obj:`None`)
        force_reload (bool, optional): re-process the named datasets from their raw
            files. (default: :obj:`False`)

    Raises:
        DatasetNotFoundError: when a named dataset's raw files are missing (the message says
            which and where to get them).
        DatasetFormatError: when a raw file is malformed.
    """
    def folder(key: str) -> Path:
        return Path(root) / key if root is not None else default_root(key)

    if names:
        loaded = []
        for n in names:
            key = _registry_key(n)
            known = key in DATASETS and not _is_path(n)
            loaded.append(load_dataset(n, root=folder(key) if known else None,
                                       force_reload=force_reload))
        return format_stats(loaded)

    rows = []
    for key, (cls, defaults) in DATASETS.items():
        declared = defaults.get('modalities')
        if declared is None:
            declared = [m for m, _ in cls.info.modality_dims] if cls.info else []
        path = folder(key)
        missing = raw_files_missing(path, declared)
        found = available_modalities(resolve_raw_dir(path))
        if not missing:
            status = 'present'
        elif not resolve_raw_dir(path).is_dir():
            status = 'missing (no raw folder)'
        else:
            status = f'missing {", ".join(missing)}'
        mods = ', '.join(found) if found else 'none'
        rows.append((key, status, mods, str(path)))
    head = ('name', 'raw files', 'feature files', 'folder')
    widths = [max(len(r[j]) for r in [head, *rows]) for j in range(3)]
    lines = ['  '.join(f'{c:<{w}}' for c, w in zip(r[:3], widths)) + '  ' + r[3]
             for r in [head, *rows]]
    lines.append('')
    lines.append('Statistics: mmssl-pyg datasets NAME [NAME ...] (a folder path works too); '
                 'for a missing dataset this says which files to get and where.')
    return '\n'.join(lines)
