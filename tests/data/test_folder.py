"""Reading a raw folder (mmssl_pyg.data.folder): features stay aligned with the item ids.

Every feature row encodes its own item id (row ``i`` is ``[i, 10 * i]``), and some item ids
appear in no split, so a loader that renumbers the items without moving the feature rows
(or moves them without renumbering) gives some interaction another item's features."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from mmssl_pyg.data import load_dataset
from mmssl_pyg.data.folder import read_mmssl_folder

# 4 users, 8 items; items 0, 3 and 6 appear in no split (their feature rows still exist)
SPLITS = {'train': {'0': [7, 2], '1': [5, 1, 4], '2': [2, 7], '3': [4, 5]},
          'val': {'0': [5], '1': [2], '2': [1], '3': [7]},
          'test': {'0': [4], '1': [7], '2': [5], '3': [2]}}
NUM_ITEMS = 8


@pytest.fixture
def folder(tmp_path):
    raw = tmp_path / 'ids' / 'raw'
    raw.mkdir(parents=True)
    for split, pairs in SPLITS.items():
        (raw / f'{split}.json').write_text(json.dumps(pairs))
    ids = np.arange(NUM_ITEMS, dtype=np.float32)
    np.save(raw / 'image_feat.npy', np.stack([ids, 10 * ids], 1))
    return tmp_path / 'ids'


def _pairs_by_content(data, split):
    """The stored (user, item) pairs of ``split``, each item named by its feature row."""
    store = data['user', 'interacts', 'item']
    ei = {'train': store.edge_index, 'val': store.val_edge_index,
          'test': store.test_edge_index}[split]
    feat = data['item'].image_feat
    assert np.array_equal(feat[:, 1].numpy(), 10 * feat[:, 0].numpy())  # rows kept whole
    return sorted((int(u), int(feat[i, 0])) for u, i in ei.t().tolist())


def _raw_pairs(split):
    return sorted((int(u), i) for u, items in SPLITS[split].items() for i in items)


@pytest.mark.parametrize('how', ['read_mmssl_folder', 'load_dataset'])
def test_feature_rows_follow_their_item_ids(folder, how):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # 3 items without interactions: reported, kept
        if how == 'read_mmssl_folder':
            data = read_mmssl_folder(folder / 'raw')
        else:
            data = load_dataset(str(folder), log=False)[0]
    for split in ('train', 'val', 'test'):
        assert _pairs_by_content(data, split) == _raw_pairs(split), split
    # the unused ids keep their rows (items without interactions are still ranked)
    assert data['item'].num_nodes == NUM_ITEMS and data['item'].image_feat.shape == (8, 2)
