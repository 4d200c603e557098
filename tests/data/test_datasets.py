"""Dataset loaders on the bundled real data, and every bad-input case on small fixture folders.

Every test works on copies under ``tmp_path``: nothing is written into the repository's
``datasets/*/processed`` folders.
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from mmssl_pyg.data import (
    EDGE,
    REV_EDGE,
    Allrecipes,
    AmazonBaby,
    DatasetFormatError,
    DatasetNotFoundError,
    MMSSLDataset,
    RecGraph,
    TikTok,
    TikTokMini,
    datasets_command,
    default_root,
    format_stats,
    load_dataset,
    read_json_split,
    read_sparse_matrix,
)

DATASETS_DIR = Path(__file__).resolve().parents[2] / 'datasets'


def copy_raw(name: str, dst: Path) -> Path:
    """Copy ``datasets/<name>/raw`` to ``dst/<name>/raw``; return ``dst/<name>``."""
    root = dst / name
    shutil.copytree(DATASETS_DIR / name / 'raw', root / 'raw')
    return root


@pytest.fixture(scope='module')
def tiktok_root(tmp_path_factory) -> Path:
    return copy_raw('tiktok', tmp_path_factory.mktemp('tiktok'))


@pytest.fixture(scope='module')
def mini_root(tmp_path_factory) -> Path:
    return copy_raw('tiktok-mini', tmp_path_factory.mktemp('mini'))


@pytest.fixture(scope='module')
def baby_root(tmp_path_factory) -> Path:
    return copy_raw('amazon-baby-interactions', tmp_path_factory.mktemp('baby'))


def split_counts(data) -> tuple[int, int, int]:
    store = data[EDGE]
    return (store.edge_index.size(1), store.val_edge_index.size(1),
            store.test_edge_index.size(1))


def no_data_warnings(record) -> bool:
    return not any('duplicate' in str(w.message) or 'appear in both' in str(w.message)
                   for w in record)


# --------------------------------------------------------------------------------------------
# Real bundled data, exact counts
# --------------------------------------------------------------------------------------------

def test_tiktok_exact_counts_and_layout(tiktok_root):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter('always')
        dataset = TikTok(root=str(tiktok_root))
    assert no_data_warnings(record)
    assert len(dataset) == 1
    data = dataset[0]
    assert data['user'].num_nodes == 9308 and data['item'].num_nodes == 6710
    assert split_counts(data) == (59541, 3051, 6130)
    assert data.modalities == ['image', 'audio']
    assert data.name == 'tiktok'
    for m in ('image', 'audio'):
        feat = data['item'][f'{m}_feat']
        assert feat.shape == (6710, 128) and feat.dtype == torch.float32
    raw_image = np.load(tiktok_root / 'raw' / 'image_feat.npy')
    assert torch.equal(data['item'].image_feat, torch.from_numpy(raw_image.astype(np.float32)))
    ei = data[EDGE].edge_index
    assert ei.dtype == torch.long and ei.shape == (2, 59541)
    assert torch.equal(data[REV_EDGE].edge_index, ei.flip(0))
    assert int(ei[0].max()) < 9308 and int(ei[1].max()) < 6710
    keys = ei[0] * 6710 + ei[1]
    assert bool((keys[1:] >= keys[:-1]).all())  # sorted by (user, item)
    assert Path(dataset.processed_paths[0]).name == 'data_image+audio.pt'

    stats = dataset.stats()
    assert stats == {'name': 'tiktok', 'users': 9308, 'items': 6710, 'train': 59541,
                     'val': 3051, 'test': 6130, 'interactions': 68722,
                     'sparsity': pytest.approx(1 - 59541 / (9308 * 6710)),
                     'modalities': {'image': 128, 'audio': 128}}

    graph = RecGraph.from_hetero(dataset[0])
    assert (graph.num_users, graph.num_items, graph.num_train) == (9308, 6710, 59541)
    assert graph.modalities == ['image', 'audio'] and graph.name == 'tiktok'
    assert graph.val_edge_index.size(1) == 3051 and graph.test_edge_index.size(1) == 6130


def test_tiktok_every_raw_pair_is_stored(tiktok_root):
    dataset = TikTok(root=str(tiktok_root))
    store = dataset[0][EDGE]
    for split, key in (('train', 'edge_index'), ('val', 'val_edge_index'),
                       ('test', 'test_edge_index')):
        raw = json.loads((tiktok_root / 'raw' / f'{split}.json').read_text())
        pairs = sorted((int(u), i) for u, items in raw.items() for i in items)
        assert sorted(map(tuple, store[key].t().tolist())) == pairs


def test_tiktok_mini_exact_counts(mini_root):
    dataset = load_dataset('tiktok-mini', root=mini_root)
    assert isinstance(dataset, TikTokMini)
    data = dataset[0]
    assert (data['user'].num_nodes, data['item'].num_nodes) == (1000, 2872)
    assert split_counts(data) == (6227, 336, 664)
    assert data.modalities == ['image', 'audio'] and data.name == 'tiktok-mini'
    assert RecGraph.from_hetero(data).num_items == 2872


def test_amazon_baby_interactions_exact_counts(baby_root):
    dataset = load_dataset('amazon-baby-interactions', root=baby_root)
    data = dataset[0]
    assert (data['user'].num_nodes, data['item'].num_nodes) == (19445, 7050)
    assert split_counts(data) == (118551, 21682, 20559)
    assert data.modalities == [] and data.name == 'amazon-baby-interactions'
    assert Path(dataset.processed_paths[0]).name == 'data_no_features.pt'
    graph = RecGraph.from_hetero(data)
    assert graph.features == {} and graph.num_users == 19445


def test_load_is_fast(mini_root, tmp_path):
    import time
    root = copy_raw('tiktok', tmp_path)
    start = time.perf_counter()
    TikTok(root=root)
    elapsed = time.perf_counter() - start
    # Vectorised JSON -> tensors: ~0.1 s here; generous bound for a busy shared machine.
    assert elapsed < 10, f'processing TikTok took {elapsed:.1f}s'


# --------------------------------------------------------------------------------------------
# Modality subsets, processed files, pre_transform, reuse
# --------------------------------------------------------------------------------------------

def test_modality_subsets_share_raw_and_record_choice(mini_root):
    raw_before = sorted(p.name for p in (mini_root / 'raw').iterdir())
    audio = TikTokMini(root=mini_root, modalities=['audio'])
    none = TikTokMini(root=mini_root, modalities=[])
    swapped = TikTokMini(root=mini_root, modalities=['audio', 'image'])
    assert sorted(p.name for p in (mini_root / 'raw').iterdir()) == raw_before

    assert Path(audio.processed_paths[0]).name == 'data_audio.pt'
    assert Path(none.processed_paths[0]).name == 'data_no_features.pt'
    assert Path(swapped.processed_paths[0]).name == 'data_audio+image.pt'
    assert audio[0].modalities == ['audio'] and 'image_feat' not in audio[0]['item']
    assert none[0].modalities == [] and 'audio_feat' not in none[0]['item']
    assert swapped[0].modalities == ['audio', 'image']
    assert split_counts(none[0]) == (6227, 336, 664)
    # The processed file itself records the choice.
    stored = torch.load(audio.processed_paths[0], weights_only=True)['data']
    assert stored['_global_store']['modalities'] == ['audio']
    assert stored['_global_store']['name'] == 'tiktok-mini'
    assert RecGraph.from_hetero(none[0]).modalities == []


def test_processed_file_is_reused_and_force_reload(mini_root):
    first = TikTokMini(root=mini_root, modalities=['image'])
    path = Path(first.processed_paths[0])
    stamp = path.stat().st_mtime_ns
    TikTokMini(root=mini_root, modalities=['image'])
    assert path.stat().st_mtime_ns == stamp
    os.utime(path, ns=(0, 0))
    TikTokMini(root=mini_root, modalities=['image'], force_reload=True)
    assert path.stat().st_mtime_ns != 0


def mark_processed(data):
    data.marked = torch.tensor([1])
    return data


def test_pre_transform_is_applied_once(tmp_path):
    root = copy_raw('tiktok-mini', tmp_path)
    dataset = TikTokMini(root=root, modalities=[], pre_transform=mark_processed)
    assert torch.equal(dataset[0].marked, torch.tensor([1]))
    # recorded inside the processed file (PyG's separate, unsafely loaded pre_transform.pt
    # is not used)
    stored = torch.load(dataset.processed_paths[0], weights_only=True)
    assert stored['key']['pre_transform'] == '<function mark_processed>'
    again = TikTokMini(root=root, modalities=[], pre_transform=mark_processed)
    assert torch.equal(again[0].marked, torch.tensor([1]))
    assert not (root / 'processed' / 'pre_transform.pt').exists()


def test_stats_and_table(mini_root, baby_root):
    mini = TikTokMini(root=mini_root)
    baby = load_dataset('amazon-baby-interactions', root=baby_root)
    stats = mini.stats()
    assert stats['sparsity'] == pytest.approx(1 - 6227 / (1000 * 2872))
    assert stats['interactions'] == 6227 + 336 + 664
    table = format_stats(mini, baby)
    lines = table.splitlines()
    assert 'tiktok-mini' in lines[0] and 'amazon-baby-interactions' in lines[0]
    assert any(line.startswith('Users') and '1,000' in line and '19,445' in line
               for line in lines)
    assert any(line.startswith('image dim') and '128' in line and '-' in line for line in lines)
    assert any(line.startswith('Sparsity') and '99.783%' in line for line in lines)


# --------------------------------------------------------------------------------------------
# Names, roots, the datasets command
# --------------------------------------------------------------------------------------------

def test_load_dataset_names_and_paths(mini_root):
    assert isinstance(load_dataset('TikTok_Mini', root=mini_root), TikTokMini)
    generic = load_dataset(str(mini_root), modalities=['image'])
    assert type(generic) is MMSSLDataset and generic[0].name == 'tiktok-mini'
    with pytest.raises(ValueError) as err:
        load_dataset('movielens')
    for name in ('tiktok', 'tiktok-mini', 'amazon-baby', 'amazon-sports', 'allrecipes',
                 'amazon-baby-interactions', 'amazon-sports-interactions'):
        assert name in str(err.value)


def test_default_root_is_the_repository_datasets_folder():
    assert default_root('tiktok') == DATASETS_DIR / 'tiktok'
    assert (default_root('tiktok') / 'raw' / 'train.json').is_file()


def test_release_layout_without_raw_subfolder(tmp_path):
    root = tmp_path / 'release'
    shutil.copytree(DATASETS_DIR / 'tiktok-mini' / 'raw', root)
    dataset = MMSSLDataset(root)
    assert dataset.raw_dir == str(root)
    assert split_counts(dataset[0]) == (6227, 336, 664)
    assert dataset[0].modalities == ['image', 'audio']


def test_datasets_command(tmp_path):
    copy_raw('tiktok-mini', tmp_path)
    listing = datasets_command(None, root=tmp_path)
    rows = {line.split()[0]: line for line in listing.splitlines() if line.strip()}
    assert 'present' in rows['tiktok-mini'] and 'image, audio' in rows['tiktok-mini']
    assert 'missing' in rows['amazon-baby'] and 'missing' in rows['tiktok']
    table = datasets_command(['tiktok-mini'], root=tmp_path)
    assert '1,000' in table and '2,872' in table and '6,227' in table


# --------------------------------------------------------------------------------------------
# Datasets that cannot be downloaded
# --------------------------------------------------------------------------------------------

def test_amazon_baby_missing_files_error_lists_everything(tmp_path):
    root = tmp_path / 'amazon-baby'
    with pytest.raises(DatasetNotFoundError) as err:
        AmazonBaby(root=root)
    msg = str(err.value)
    assert isinstance(err.value, FileNotFoundError) and isinstance(err.value, DatasetFormatError)
    for f in ('train.json', 'val.json', 'test.json', 'image_feat.npy', 'text_feat.npy'):
        assert f in msg and f in err.value.missing
    for fact in ('19,445 users', '7,050 items', '[7050, 4096]', '[7050, 1024]', '139,110',
                 'HKUDS/MMSSL', 'CRIPAC-DIG/LATTICE', 'HKUDS/DiffMM', 'trnMat.pkl'):
        assert fact in msg, fact
    assert not root.exists()  # a failed load leaves nothing behind


def test_allrecipes_missing_files_error(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        Allrecipes(root=tmp_path / 'allrecipes')
    msg = str(err.value)
    for fact in ('[10067, 2048]', '[10067, 20]', '19,805 users', 'HKUDS/MMSSL'):
        assert fact in msg, fact


def test_amazon_baby_loads_when_files_are_placed(tmp_path):
    root = copy_raw('amazon-baby-interactions', tmp_path)
    with pytest.raises(DatasetNotFoundError) as err:
        AmazonBaby(root=root)
    assert err.value.missing == ['image_feat.npy', 'text_feat.npy']
    # Small placeholder arrays only exercise the loader; they are not features.
    rows = np.arange(7050, dtype=np.float32)[:, None]
    np.save(root / 'raw' / 'image_feat.npy', np.repeat(rows, 8, axis=1))
    np.save(root / 'raw' / 'text_feat.npy', np.repeat(rows, 4, axis=1).astype(np.float16))
    data = AmazonBaby(root=root)[0]
    assert data.modalities == ['image', 'text'] and data.name == 'amazon-baby'
    assert data['item'].text_feat.dtype == torch.float32
    assert split_counts(data) == (118551, 21682, 20559)


# --------------------------------------------------------------------------------------------
# Pickled matrices of the MMSSL (train_mat) and DiffMM (trnMat.pkl, ...) releases
# --------------------------------------------------------------------------------------------

def baby_matrices(baby_root: Path) -> dict[str, sp.coo_matrix]:
    out = {}
    for split in ('train', 'val', 'test'):
        raw = json.loads((baby_root / 'raw' / f'{split}.json').read_text())
        users = [int(u) for u, items in raw.items() for _ in items]
        items = [i for its in raw.values() for i in its]
        out[split] = sp.coo_matrix((np.ones(len(users), dtype=np.float32), (users, items)),
                                   shape=(19445, 7050))
    return out


def dump(obj, path: Path) -> None:
    with open(path, 'wb') as f:
        pickle.dump(obj, f)


def test_diffmm_pickles_convert_to_the_same_graph(baby_root, tmp_path):
    reference = load_dataset('amazon-baby-interactions', root=baby_root)[0]
    raw = tmp_path / 'pkl' / 'raw'
    raw.mkdir(parents=True)
    mats = baby_matrices(baby_root)
    for split, f in (('train', 'trnMat.pkl'), ('val', 'valMat.pkl'), ('test', 'tstMat.pkl')):
        dump(mats[split], raw / f)
    dataset = MMSSLDataset(tmp_path / 'pkl')
    assert dataset.raw_format == 'pkl'
    assert Path(dataset.processed_paths[0]).name == 'data_pkl_no_features.pt'
    data = dataset[0]
    assert (data['user'].num_nodes, data['item'].num_nodes) == (19445, 7050)
    for key in ('edge_index', 'val_edge_index', 'test_edge_index'):
        assert torch.equal(data[EDGE][key], reference[EDGE][key]), key


def test_mmssl_train_mat_converts_to_the_same_graph(baby_root, tmp_path):
    reference = load_dataset('amazon-baby-interactions', root=baby_root)[0]
    raw = tmp_path / 'tm' / 'raw'
    raw.mkdir(parents=True)
    dump(baby_matrices(baby_root)['train'].tocsr(), raw / 'train_mat')
    for split in ('val', 'test'):
        shutil.copy(baby_root / 'raw' / f'{split}.json', raw)
    dataset = MMSSLDataset(tmp_path / 'tm')
    assert dataset.raw_format == 'train_mat'
    data = dataset[0]
    for key in ('edge_index', 'val_edge_index', 'test_edge_index'):
        assert torch.equal(data[EDGE][key], reference[EDGE][key]), key


def test_pickle_reader_refuses_other_objects(tmp_path):
    path = tmp_path / 'trnMat.pkl'
    dump({'not': 'a matrix'}, path)
    with pytest.raises(DatasetFormatError) as err:
        read_sparse_matrix(path)
    assert 'trnMat.pkl' in str(err.value) and err.value.field == 'pickle'
    dump(np.eye(3), path)
    with pytest.raises(DatasetFormatError, match='trnMat.pkl'):
        read_sparse_matrix(path)


def test_pickle_reader_keeps_duplicates_and_reports_zeros(tmp_path):
    path = tmp_path / 'trnMat.pkl'
    mat = sp.coo_matrix((np.array([1., 1., 0., 1.]), ([0, 0, 1, 2], [1, 1, 0, 2])), shape=(3, 3))
    dump(mat, path)
    with pytest.warns(UserWarning, match='1 stored entries are explicit zeros'):
        pairs = read_sparse_matrix(path)
    assert pairs.users.tolist() == [0, 0, 2] and pairs.items.tolist() == [1, 1, 2]
    assert pairs.shape == (3, 3)


def test_pickled_matrices_must_agree_on_shape(tmp_path):
    raw = tmp_path / 'bad' / 'raw'
    raw.mkdir(parents=True)
    one = sp.coo_matrix((np.ones(2), ([0, 1], [0, 1])), shape=(2, 2))
    dump(one, raw / 'trnMat.pkl')
    dump(one, raw / 'valMat.pkl')
    dump(sp.coo_matrix((np.ones(1), ([0], [2])), shape=(2, 3)), raw / 'tstMat.pkl')
    with pytest.raises(DatasetFormatError) as err:
        MMSSLDataset(tmp_path / 'bad')
    assert 'tstMat.pkl: 2 x 3' in str(err.value) and err.value.field == 'shape'


# --------------------------------------------------------------------------------------------
# Bad input on small fixture folders: each error names the file and the field
# --------------------------------------------------------------------------------------------

GOOD_SPLITS = {'train': {'0': [0, 1], '1': [2, 3], '2': [4]},
               'val': {'0': [2]}, 'test': {'1': [0], '2': [1]}}


def write_folder(root: Path, feats: dict | None = None, **splits) -> Path:
    """Write a small raw folder; a split given as ``str`` is written verbatim."""
    raw = root / 'raw'
    raw.mkdir(parents=True, exist_ok=True)
    for split in ('train', 'val', 'test'):
        content = splits.get(split, GOOD_SPLITS[split])
        text = content if isinstance(content, str) else json.dumps(content)
        (raw / f'{split}.json').write_text(text)
    if feats is None:
        feats = {'image': np.arange(20, dtype=np.float32).reshape(5, 4)}
    for name, arr in feats.items():
        if isinstance(arr, bytes):
            (raw / f'{name}_feat.npy').write_bytes(arr)
        else:
            np.save(raw / f'{name}_feat.npy', arr)
    return root


def load_error(root: Path, **kwargs) -> DatasetFormatError:
    with pytest.raises(DatasetFormatError) as err:
        MMSSLDataset(root, **kwargs)
    return err.value


def test_fixture_folder_loads(tmp_path):
    data = MMSSLDataset(write_folder(tmp_path / 'ok'))[0]
    assert (data['user'].num_nodes, data['item'].num_nodes) == (3, 5)
    assert split_counts(data) == (5, 1, 2)


def test_missing_split_file(tmp_path):
    root = write_folder(tmp_path / 'd')
    (root / 'raw' / 'val.json').unlink()
    err = load_error(root)
    assert isinstance(err, DatasetNotFoundError)
    assert 'val.json' in str(err) and 'MISSING' in str(err) and err.missing == ['val.json']
    with pytest.raises(DatasetFormatError) as direct:
        read_json_split(root / 'raw' / 'val.json')
    assert 'val.json' in str(direct.value) and direct.value.field == 'file'


def test_unreadable_split_file(tmp_path):
    root = write_folder(tmp_path / 'd')
    path = root / 'raw' / 'test.json'
    path.unlink()
    path.mkdir()  # a folder where the file should be
    err = load_error(root)
    assert 'test.json' in str(err)
    with pytest.raises(DatasetFormatError) as direct:
        read_json_split(path)
    assert direct.value.field == 'file' and 'cannot read' in str(direct.value)


def test_invalid_json(tmp_path):
    err = load_error(write_folder(tmp_path / 'd', train='{"0": [1, 2'))
    assert 'train.json' in err.path and err.field == 'JSON' and 'Fix:' in str(err)


def test_json_not_an_object(tmp_path):
    err = load_error(write_folder(tmp_path / 'd', val='[[0, 1]]'))
    assert 'val.json' in err.path and err.field == 'top level' and 'a JSON list' in str(err)


def test_json_value_not_a_list(tmp_path):
    err = load_error(write_folder(tmp_path / 'd', train={'0': [1], '7': 3}))
    assert 'train.json' in err.path and err.field == 'user "7"'
    assert '3 (a JSON integer)' in str(err)


@pytest.mark.parametrize('bad, shown', [('"x"', '"x" (a JSON string)'),
                                        ('2.5', '2.5 (a JSON number)'),
                                        ('true', 'true (a JSON boolean)'),
                                        ('null', 'null (a JSON null)')])
def test_item_id_not_an_integer(tmp_path, bad, shown):
    err = load_error(write_folder(tmp_path / 'd', test=f'{{"0": [1], "2": [0, {bad}]}}'))
    assert 'test.json' in err.path and err.field == 'user "2"' and shown in str(err)


@pytest.mark.parametrize('key', ['abc', '-1', '1.5', ''])
def test_user_id_not_an_integer(tmp_path, key):
    err = load_error(write_folder(tmp_path / 'd', train={'0': [1], key: [2]}))
    assert 'train.json' in err.path and err.field == f'user "{key}"'
    assert repr(key) in str(err)


def test_negative_item_id(tmp_path):
    err = load_error(write_folder(tmp_path / 'd', val={'1': [-3]}))
    assert 'val.json' in err.path and err.field == 'user "1"' and 'item id -3' in str(err)


def test_item_id_beyond_feature_rows(tmp_path):
    err = load_error(write_folder(tmp_path / 'd', test={'2': [7]}))
    assert 'test.json' in err.path and err.field == 'user "2"'
    assert 'item id 7 is outside [0, 5)' in str(err) and 'image_feat.npy' in str(err)


def test_feature_rows_disagree(tmp_path):
    feats = {'image': np.zeros((5, 4), np.float32), 'text': np.zeros((6, 2), np.float32)}
    err = load_error(write_folder(tmp_path / 'd', feats=feats))
    assert err.field == 'rows'
    assert 'image_feat.npy: 5 rows' in str(err) and 'text_feat.npy: 6 rows' in str(err)


def test_feature_rows_disagree_with_matrix_shape(tmp_path):
    raw = tmp_path / 'd' / 'raw'
    raw.mkdir(parents=True)
    mat = sp.coo_matrix((np.ones(2), ([0, 1], [0, 1])), shape=(2, 6))
    for f in ('trnMat.pkl', 'valMat.pkl', 'tstMat.pkl'):
        dump(mat, raw / f)
    np.save(raw / 'image_feat.npy', np.zeros((5, 3), np.float32))
    err = load_error(tmp_path / 'd')
    assert 'trnMat.pkl' in err.path and err.field == 'shape' and '5 rows' in str(err)


@pytest.mark.parametrize('value', [np.nan, np.inf, -np.inf])
def test_non_finite_features(tmp_path, value):
    feat = np.ones((5, 4), np.float16)
    feat[1, 2] = value
    feat[3, 0] = value
    err = load_error(write_folder(tmp_path / 'd', feats={'image': feat}))
    assert 'image_feat.npy' in err.path and err.field == 'values'
    assert '2 of 5 rows' in str(err) and 'first: row 1' in str(err)


def test_float64_overflow_is_reported(tmp_path):
    feat = np.ones((5, 4), np.float64)
    feat[4, 0] = 1e300
    err = load_error(write_folder(tmp_path / 'd', feats={'image': feat}))
    assert err.field == 'values' and 'first: row 4' in str(err)


def test_unreadable_feature_file(tmp_path):
    err = load_error(write_folder(tmp_path / 'd', feats={'image': b'not an npy file'}))
    assert 'image_feat.npy' in err.path and err.field == 'format'


def test_feature_file_not_2d(tmp_path):
    err = load_error(write_folder(tmp_path / 'd', feats={'image': np.zeros(5, np.float32)}))
    assert 'image_feat.npy' in err.path and err.field == 'shape'


def test_requested_modality_missing(tmp_path):
    err = load_error(write_folder(tmp_path / 'd'), modalities=['image', 'text'])
    assert isinstance(err, DatasetNotFoundError) and err.missing == ['text_feat.npy']
    assert 'Feature files present: image_feat.npy' in str(err)


@pytest.mark.parametrize('split', ['train', 'val', 'test'])
@pytest.mark.parametrize('content', [{}, {'0': []}])
def test_empty_split(tmp_path, split, content):
    err = load_error(write_folder(tmp_path / 'd', **{split: content}))
    assert f'{split}.json' in err.path and err.field == 'interactions'
    assert f'the {split} split has no (user, item) pairs' in str(err)


def test_id_only_item_count_is_largest_id(tmp_path):
    root = write_folder(tmp_path / 'd', feats={}, test={'4': [9]})
    data = MMSSLDataset(root)[0]
    assert (data['user'].num_nodes, data['item'].num_nodes) == (5, 10)
    assert data.modalities == []


def test_duplicates_and_overlaps_are_kept_and_reported(tmp_path):
    train = {'0': [0, 1, 1], '1': [2, 3], '2': [4, 4, 4]}  # 3 duplicate pairs
    val = {'0': [1], '1': [2]}                               # 2 pairs also in train
    test = {'1': [3], '2': [0]}                              # 1 pair also in train
    root = write_folder(tmp_path / 'd', train=train, val=val, test=test)
    with pytest.warns(UserWarning) as record:
        data = MMSSLDataset(root)[0]
    messages = [str(w.message) for w in record]
    assert any('train.json' in m and '3 duplicate (user, item) pair(s) among 8' in m
               for m in messages), messages
    assert any('2 (user, item) pair(s) appear in both the train and the val split' in m
               for m in messages), messages
    assert any('1 (user, item) pair(s) appear in both the train and the test split' in m
               for m in messages), messages
    assert split_counts(data) == (8, 2, 2)  # nothing dropped


def test_duplicate_user_keys_are_kept_and_reported(tmp_path):
    root = write_folder(tmp_path / 'd', train='{"0": [0, 1], "1": [2], "0": [3]}')
    with pytest.warns(UserWarning, match='1 user id'):
        data = MMSSLDataset(root)[0]
    assert data[EDGE].edge_index[:, data[EDGE].edge_index[0] == 0][1].tolist() == [0, 1, 3]


def test_bad_arguments(tmp_path):
    root = write_folder(tmp_path / 'd')
    with pytest.raises(ValueError, match='more than once'):
        MMSSLDataset(root, modalities=['image', 'image'])
    with pytest.raises(ValueError, match='raw_format'):
        MMSSLDataset(root, raw_format='csv')
    with pytest.raises(TypeError, match='root'):
        MMSSLDataset()
