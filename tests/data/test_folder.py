"""Reading a raw folder (mmssl_pyg.data.folder): features stay aligned with the item ids.

Every feature row encodes its own item id (row ``i`` is ``[i, 10 * i]``), and some item ids
appear in no split, so a loader that renumbers the items without moving the feature rows
(or moves them without renumbering) gives some interaction another item's features."""
from __future__ import annotations

import json
import pickle
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from mmssl_pyg.data import DatasetFormatError, load_dataset
from mmssl_pyg.data import folder as folder_module
from mmssl_pyg.data.folder import (
    build_hetero_data,
    detect_raw_format,
    order_modalities,
    raw_files_missing,
    read_mmssl_folder,
    resolve_raw_dir,
)

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


def _pkl_folder(raw, shapes, features=None):
    """A DiffMM-layout folder: one pickled matrix per split (user 0 - item 0 and user 1 -
    item 1), of the given shapes, and optional feature files."""
    raw.mkdir(parents=True)
    for name, shape in zip(('trnMat.pkl', 'valMat.pkl', 'tstMat.pkl'), shapes):
        with open(raw / name, 'wb') as f:
            pickle.dump(sp.coo_matrix((np.ones(2), ([0, 1], [0, 1])), shape=shape), f)
    for modality, feat in (features or {}).items():
        np.save(raw / f'{modality}_feat.npy', feat)
    return raw


def test_node_count_errors_name_the_folder_or_file_the_field_and_the_fix(tmp_path):
    raw = _pkl_folder(tmp_path / 'a', [(2, 6), (2, 6), (3, 6)])
    with pytest.raises(DatasetFormatError) as err:
        read_mmssl_folder(raw)
    assert str(err.value) == (
        f'{raw} [shape]: the split matrices disagree (trnMat.pkl: 2 x 6, valMat.pkl: 2 x 6, '
        'tstMat.pkl: 3 x 6). Fix: save every split as a num_users x num_items matrix')

    raw = _pkl_folder(tmp_path / 'b', [(2, 6)] * 3, {'image': np.zeros((5, 3), np.float32)})
    with pytest.raises(DatasetFormatError) as err:
        read_mmssl_folder(raw)
    assert str(err.value) == (
        f'{raw / "trnMat.pkl"} [shape]: the matrix has 6 item columns but the feature files '
        'have 5 rows. Fix: the feature files need one row per item column of the interaction '
        'matrices; use the files of one release together')

    feats = {'image': np.zeros((6, 3), np.float32), 'text': np.zeros((5, 2), np.float32)}
    raw = _pkl_folder(tmp_path / 'c', [(2, 6)] * 3, feats)
    with pytest.raises(DatasetFormatError) as err:
        read_mmssl_folder(raw)
    assert err.value.path == str(raw) and err.value.field == 'rows'


def test_build_hetero_data_default_name_and_missing_files(folder):
    empty = torch.zeros(2, 0, dtype=torch.long)
    assert build_hetero_data(empty, empty, empty, 1, 1).name == 'custom'
    (folder / 'raw' / 'test.json').unlink()
    assert raw_files_missing(folder, ['image', 'text']) == ['test.json', 'text_feat.npy']


def test_item_count_source_is_named_when_no_feature_file_is_loaded(folder):
    splits = {**SPLITS, 'val': {**SPLITS['val'], '1': [-3]}}
    (folder / 'raw' / 'val.json').write_text(json.dumps(splits['val']))
    with pytest.raises(DatasetFormatError) as err:
        read_mmssl_folder(folder / 'raw', modalities=[])
    assert err.value.problem == (
        'item id -3 is outside [0, 8) (1 pair(s) out of range; 8 items per the largest item id '
        'of all splits (no feature file loaded))')


def test_read_mmssl_folder_default_name_and_bad_format(folder):
    with pytest.warns(UserWarning) as caught:
        assert read_mmssl_folder(folder / 'raw').name == 'custom'
    assert [str(w.message) for w in caught] == [
        f'{folder / "raw"}: 3 of the 8 items (counted from the rows of image_feat.npy) appear '
        'in no split; they are kept as items without interactions (their feature rows are '
        'loaded and they are ranked at evaluation)']
    with pytest.raises(ValueError) as err:
        read_mmssl_folder(folder / 'raw', raw_format='csv')
    assert str(err.value) == "raw_format must be one of ['json', 'pkl', 'train_mat'], got 'csv'"


def test_user_count_source_is_named_in_messages(folder, tmp_path):
    # JSON: user 5 makes 6 users, user 4 appears nowhere: a warning naming the folder
    (folder / 'raw' / 'val.json').write_text(json.dumps({**SPLITS['val'], '5': [1]}))
    with pytest.warns(UserWarning) as caught:
        read_mmssl_folder(folder / 'raw', modalities=[])
    assert f'{folder / "raw"}: 1 of the 6 users (counted from the largest user id) appear in ' \
        'no split; they are kept as users without interactions; remap the ids if that is not ' \
        'intended' in [str(w.message) for w in caught]
    # train_mat: the matrix's 2 rows fix the users, so user 3 of val.json is out of range
    raw = tmp_path / 'mat' / 'raw'
    raw.mkdir(parents=True)
    with open(raw / 'train_mat', 'wb') as f:
        pickle.dump(sp.coo_matrix((np.ones(2), ([0, 1], [0, 1])), shape=(2, 8)), f)
    (raw / 'val.json').write_text(json.dumps({'0': [2], '3': [4]}))
    (raw / 'test.json').write_text(json.dumps({'1': [3]}))
    with pytest.raises(DatasetFormatError) as err:
        read_mmssl_folder(raw, modalities=[])
    assert err.value.problem == ('user id 3 is outside [0, 2) (1 pair(s) out of range; 2 users '
                                 'per the rows of train_mat)')


@pytest.mark.skipif(hasattr(folder_module, 'x_read_mmssl_folder__mutmut_orig'),
                    reason="mutmut's trampolines add stack frames between the caller and "
                    'the warning, so stacklevel is checked in the plain suite only')
def test_duplicate_pairs_warn_at_the_callers_line(folder):
    (folder / 'raw' / 'train.json').write_text(json.dumps({**SPLITS['train'], '0': [7, 2, 7]}))
    with pytest.warns(UserWarning) as caught:
        read_mmssl_folder(folder / 'raw')
    duplicate = [w for w in caught if 'duplicate (user, item) pair' in str(w.message)]
    assert len(duplicate) == 1 and duplicate[0].filename == __file__


def test_pairs_lost_between_the_files_and_the_graph_are_a_bug_report(folder, monkeypatch):
    build = folder_module.build_hetero_data

    def drop_last_train_pair(train, *args, **kwargs):
        return build(train[:, :-1], *args, **kwargs)
    monkeypatch.setattr(folder_module, 'build_hetero_data', drop_last_train_pair)
    with warnings.catch_warnings(), pytest.raises(RuntimeError) as err:
        warnings.simplefilter('ignore')
        read_mmssl_folder(folder / 'raw')
    assert str(err.value) == (f'{folder / "raw" / "train.json"}: read 9 pairs but stored 8; '
                              'please report this bug')


def test_modalities_in_the_documented_order_with_the_others_after_by_name():
    names = ['video', 'audio', 'image', 'depth', 'text', 'image']
    assert order_modalities(names) == ['image', 'text', 'audio', 'depth', 'video']


def test_raw_format_and_raw_folder_detection(tmp_path):
    both = tmp_path / 'both'
    both.mkdir()
    assert detect_raw_format(both) == 'json'  # empty: json
    (both / 'trnMat.pkl').touch()
    assert detect_raw_format(both) == 'pkl'
    (both / 'train.json').touch()
    assert detect_raw_format(both) == 'json'  # train.json wins
    # the release layout: split files directly in the folder, no raw/ below it
    for name in ('train.json', 'trnMat.pkl', 'train_mat'):
        root = tmp_path / name.replace('.', '_')
        root.mkdir()
        (root / name).touch()
        assert resolve_raw_dir(root) == root, name
    # no split file: the PyG layout root/raw, even before it exists
    assert resolve_raw_dir(tmp_path / 'nothing') == tmp_path / 'nothing' / 'raw'
    # a raw/ folder wins over split files beside it
    (tmp_path / 'train_json' / 'raw').mkdir()
    assert resolve_raw_dir(tmp_path / 'train_json') == tmp_path / 'train_json' / 'raw'
