r"""Reading an MMSSL-format raw folder (``train.json``, ``val.json``, ``test.json``,
``<modality>_feat.npy``, or the other raw formats of :mod:`mmssl_pyg.data.readers`) into one
:class:`~torch_geometric.data.HeteroData` (layout: :mod:`mmssl_pyg.data.dataset`)."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from os import PathLike
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import HeteroData

from .graph import EDGE, FEAT_SUFFIX, ITEM, REV_EDGE, USER
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


def _node_counts(raw: Path, files: dict[str, Path], splits: dict[str, SplitPairs],
                 feats: dict[str, np.ndarray]) -> tuple[int, int, str | None, str]:
    """``(num_users, num_items, users_from, items_from)``: the node counts and where each
    comes from. Features fix the items, matrices fix both, else the largest ids do
    (``users_from`` is :obj:`None` then)."""
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
    return num_users, num_items, users_from, items_from


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

    num_users, num_items, users_from, items_from = _node_counts(raw, files, splits, feats)
    from_matrix = any(p.shape is not None for p in splits.values())
    for pairs in splits.values():
        check_id_range(pairs.path, pairs.users, pairs.items, num_users, num_items,
                       items_from, users_from)
    check_id_span(raw, 'user', num_users, np.concatenate([p.users for p in splits.values()]),
                  users_from or 'the largest user id', users_from and 'matrix')
    check_id_span(raw, 'item', num_items, np.concatenate([p.items for p in splits.values()]),
                  items_from, 'features' if feats else 'matrix' if from_matrix else None)

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
