"""Tests of ``mmssl_pyg/data/dataset.py``.

Adversarial data: crafted processed caches (code execution), raw files edited after the
first load, absurd id ranges, damaged matrices. Each case asserts the exact outcome: a clear
error naming the file and the fix, or the correct data.

Dataset loaders on the bundled real data, and every bad-input case on small fixture folders.

Every test works on copies under ``tmp_path``: nothing is written into the repository's
``datasets/*/processed`` folders."""
from __future__ import annotations

import json
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
    DatasetFormatError,
    DatasetNotFoundError,
    MMSSLDataset,
    TikTokMini,
    default_root,
    load_dataset,
)
from mmssl_pyg.testing import (
    DATASETS_DIR,
    Payload,
    assert_no_marker,
    assert_user_error,
    copy_raw,
    dump,
    load_error,
    payloads,
    run_cli,
    small_splits,
    split_counts,
    write_folder,
    write_pickle_payload,
    write_splits,
)


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / 'PWNED'
    yield path
    assert_no_marker(path)


def _pickle_matrix(path: Path, users, items, shape) -> None:
    m = sp.coo_matrix((np.ones(len(users), dtype=np.float32), (users, items)), shape=shape)
    path.write_bytes(pickle.dumps(m))


def _write_pkl_dataset(root: Path, shape, users=(0, 1, 2, 3), items=(0, 1, 2, 3)) -> Path:
    raw = root / 'raw'
    raw.mkdir(parents=True)
    users, items = np.array(users), np.array(items)
    for name in ('trnMat.pkl', 'valMat.pkl', 'tstMat.pkl'):
        _pickle_matrix(raw / name, users, items, shape)
    return root


def _csr_pickle(path: Path, damage) -> None:
    m = sp.csr_matrix((np.ones(4, dtype=np.float32), ([0, 1, 2, 3], [0, 1, 2, 3])),
                      shape=(4, 4))
    damage(m)
    path.write_bytes(pickle.dumps(m))


@pytest.fixture(scope='module')
def mini_root(tmp_path_factory) -> Path:
    return copy_raw('tiktok-mini', tmp_path_factory.mktemp('mini'))


@pytest.fixture(scope='module')
def baby_root(tmp_path_factory) -> Path:
    return copy_raw('amazon-baby-interactions', tmp_path_factory.mktemp('baby'))


def baby_matrices(baby_root: Path) -> dict[str, sp.coo_matrix]:
    out = {}
    for split in ('train', 'val', 'test'):
        raw = json.loads((baby_root / 'raw' / f'{split}.json').read_text())
        users = [int(u) for u, items in raw.items() for _ in items]
        items = [i for its in raw.values() for i in its]
        out[split] = sp.coo_matrix((np.ones(len(users), dtype=np.float32), (users, items)),
                                   shape=(19445, 7050))
    return out


@pytest.mark.parametrize('kind,stray', [('item', 10**7), ('user', 10**7), ('item', 10**12),
                                        ('user', 10**12), ('item', 5000)])
def test_stray_id_far_beyond_the_ids_used_is_an_error(tmp_path, kind, stray):
    splits = small_splits()
    if kind == 'item':
        splits['train']['0'].append(stray)
    else:
        splits['train'][str(stray)] = [1]
    root = write_splits(tmp_path / 'd', splits)
    with pytest.raises(DatasetFormatError) as info:
        load_dataset(str(root))
    msg = str(info.value)
    assert f'the largest {kind} id is {stray:,}' in msg and 'remap' in msg
    assert f'{kind} ids' in msg


def test_stray_id_error_through_the_cli(tmp_path, capsys):
    splits = small_splits()
    splits['test']['3'] = [10**7]
    root = write_splits(tmp_path / 'd', splits)
    code, _, err = run_cli(['datasets', root], capsys)
    assert_user_error(code, err, '10,000,000', 'remap')


def test_small_id_gap_is_kept_with_a_warning(tmp_path):
    splits = small_splits(num_users=12, num_items=10)
    for split in splits.values():  # item 7 never used; items 0..9 still span 10 ids
        for u, items in split.items():
            split[u] = [8 if i == 7 else i for i in items]
    root = write_splits(tmp_path / 'd', splits)
    with pytest.warns(UserWarning, match='1 of the 10 items'):
        ds = load_dataset(str(root))
    assert ds.num_items == 10


@pytest.mark.parametrize('shape,kind', [((10**12, 4), 'user'), ((4, 10**9), 'item'),
                                        ((5000, 4), 'user')])
def test_matrix_declaring_an_absurd_shape_is_an_error(tmp_path, shape, kind):
    root = _write_pkl_dataset(tmp_path / 'd', shape)
    with pytest.raises(DatasetFormatError) as info:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # the overlap report of the identical splits
            load_dataset(str(root))
    msg = str(info.value)
    assert f'declares {shape[0 if kind == "user" else 1]:,} {kind}s' in msg
    assert 'trnMat.pkl' in msg and 'remap' in msg


def test_feature_rows_without_interactions_warn_and_are_kept(tmp_path):
    root = write_splits(tmp_path / 'd', small_splits(num_users=12, num_items=10))
    np.save(root / 'raw' / 'image_feat.npy', np.ones((3000, 4), dtype=np.float32))
    with pytest.warns(UserWarning, match='2,990 of the 3,000 items') as record:
        ds = load_dataset(str(root))
    assert ds.num_items == 3000
    assert any('image_feat.npy' in str(w.message) for w in record)


def test_feature_rows_fewer_than_the_item_ids_are_an_error(tmp_path):
    root = write_splits(tmp_path / 'd', small_splits(num_users=12, num_items=10))
    np.save(root / 'raw' / 'image_feat.npy', np.ones((8, 4), dtype=np.float32))
    with pytest.raises(DatasetFormatError, match='outside \\[0, 8\\)'):
        load_dataset(str(root))


@pytest.mark.parametrize('damage,needle', [
    (lambda m: m.indptr.__setitem__(-1, 2), 'inconsistent'),
    (lambda m: m.indices.__setitem__(0, 99), 'inconsistent'),
    (lambda m: m.indices.__setitem__(0, -1), 'inconsistent'),
    (lambda m: setattr(m, 'indptr', m.indptr[:3]), 'inconsistent'),
])
def test_corrupt_csr_matrix_is_refused_naming_the_file(tmp_path, damage, needle):
    root = _write_pkl_dataset(tmp_path / 'd', (4, 4))
    _csr_pickle(root / 'raw' / 'trnMat.pkl', damage)
    with pytest.raises(DatasetFormatError) as info:
        load_dataset(str(root))
    assert needle in str(info.value) and 'trnMat.pkl' in str(info.value)


@pytest.mark.parametrize('kind', ['open', 'os.system', 'exec'])
def test_pickled_split_with_a_payload_is_refused(tmp_path, marker, kind):
    root = _write_pkl_dataset(tmp_path / 'd', (4, 4))
    write_pickle_payload(root / 'raw' / 'trnMat.pkl', payloads(marker)[kind])
    with pytest.raises(DatasetFormatError) as info:
        load_dataset(str(root))
    assert 'trnMat.pkl' in str(info.value) and 'refusing to load' in str(info.value)


def test_train_mat_payload_next_to_json_splits_is_refused(tmp_path, marker):
    root = write_splits(tmp_path / 'd', small_splits())
    (root / 'raw' / 'train.json').unlink()
    write_pickle_payload(root / 'raw' / 'train_mat', Payload(open, (str(marker), 'w')))
    with pytest.raises(DatasetFormatError, match='train_mat'):
        load_dataset(str(root))


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


def test_fixture_folder_loads(tmp_path):
    data = MMSSLDataset(write_folder(tmp_path / 'ok'))[0]
    assert (data['user'].num_nodes, data['item'].num_nodes) == (3, 5)
    assert split_counts(data) == (5, 1, 2)


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


def test_every_present_feature_file_is_listed_in_modality_order(tmp_path):
    feats = {'text': np.ones((5, 2), np.float32), 'image': np.ones((5, 4), np.float32)}
    err = load_error(write_folder(tmp_path / 'd', feats=feats), modalities=['audio'])
    assert err.missing == ['audio_feat.npy']
    assert ('Feature files present: image_feat.npy, text_feat.npy (choose with '
            'modalities=[...]).') in str(err).splitlines()

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


JSON_SHAPE = 'JSON object user id -> list of item ids'
FIX_LINE = ('Fix: place the files in {} and load again (nothing is downloaded), or load a subset '
            'with modalities=[...] (modalities=[] needs only the split files).')
PKL_LINE = ('Instead of the three JSON files, the DiffMM pickles trnMat.pkl, valMat.pkl, '
            'tstMat.pkl, or the MMSSL train_mat with val.json and test.json, are accepted.')


def test_missing_files_of_a_folder_message_and_summary_in_full(tmp_path):
    root = write_folder(tmp_path / 'd')
    raw = root / 'raw'
    (raw / 'val.json').unlink()
    (raw / 'val.json').mkdir()
    (raw / 'test.json').unlink()
    (raw / 'test.json').symlink_to(raw / 'gone.json')
    with pytest.raises(DatasetNotFoundError) as err:
        MMSSLDataset(str(root), modalities=['image', 'imgae'])
    e = err.value
    assert e.path == str(raw) and e.missing == ['val.json', 'test.json', 'imgae_feat.npy']
    assert str(e) == '\n'.join([
        f'MMSSLDataset (d): raw files missing in {raw}',
        'Expected files:',
        f'  train.json      present  {JSON_SHAPE}',
        f'  val.json        MISSING (a folder, not a file)  {JSON_SHAPE}',
        f'  test.json       MISSING (a broken symbolic link: its target is missing or a loop)  '
        f'{JSON_SHAPE}',
        '  image_feat.npy  present  float array [num_items, dim] (image features)',
        '  imgae_feat.npy  MISSING  float array [num_items, dim] (imgae features)',
        "Modality 'imgae' has no file imgae_feat.npy: did you mean 'image' (--modalities "
        "image)?",
        PKL_LINE,
        'Feature files present: image_feat.npy (choose with modalities=[...]).',
        FIX_LINE.format(raw)])
    assert e.summary == (
        f'MMSSLDataset: raw files missing in {raw}: val.json (a folder, not a file), test.json '
        '(a broken symbolic link: its target is missing or a loop), imgae_feat.npy. Fix: place '
        f'them there; `mmssl-pyg datasets {root}` (or the Python error of load_dataset) lists '
        'each expected file, its shape and where to get it')
    other = write_folder(tmp_path / 'e')
    with pytest.raises(DatasetNotFoundError) as err:
        MMSSLDataset(other / 'raw', modalities=['text'])  # only a feature file is missing
    assert err.value.summary == (
        f'MMSSLDataset: raw files missing in {other / "raw"}: text_feat.npy. Fix: place them '
        'there, or load a subset with modalities=[...] (--modalities); `mmssl-pyg datasets '
        f'{other / "raw"}` (or the Python error of load_dataset) lists each expected file, its '
        'shape and where to get it')


def test_missing_files_of_a_registered_dataset_give_the_paper_figures_and_sources(tmp_path):
    from mmssl_pyg.data.dataset import DatasetInfo

    class Toy(MMSSLDataset):
        info = DatasetInfo('toy', 'Toy Set', 1234, 56, 7890, (('image', 8), ('text', 4)),
                           ('https://a', 'https://b'), 'A note.')

    raw = tmp_path / 'toy' / 'raw'
    with pytest.raises(DatasetNotFoundError) as err:
        Toy(tmp_path / 'toy')
    counts = '(1,234 users, 56 items)'
    assert str(err.value) == '\n'.join([
        f'Toy (Toy Set): raw files missing in {raw}',
        'Expected files:',
        f'  train.json      MISSING  {JSON_SHAPE} {counts}',
        f'  val.json        MISSING  {JSON_SHAPE} {counts}',
        f'  test.json       MISSING  {JSON_SHAPE} {counts}',
        '  image_feat.npy  MISSING  float array [56, 8] (image features)',
        '  text_feat.npy   MISSING  float array [56, 4] (text features)',
        PKL_LINE,
        'Paper (MMSSL, Table 1): 1,234 users, 56 items, 7,890 interactions, modalities: image '
        '8-d, text 4-d.',
        'A note.',
        'Where to get them:',
        '  - https://a',
        '  - https://b',
        FIX_LINE.format(raw)])
    assert err.value.summary == (
        f'Toy: raw files missing in {raw}: train.json, val.json, test.json, image_feat.npy, '
        'text_feat.npy. Fix: place them there; `mmssl-pyg datasets toy` (or the Python error '
        'of load_dataset) lists each expected file, its shape and where to get it')
    assert not (tmp_path / 'toy').exists()  # nothing created by a failed load
    # the pickled layout: no note on other layouts; a folder without a note
    Toy.info = DatasetInfo('toy', 'Toy Set', 1234, 56, 7890, (), ('https://a',))
    raw.mkdir(parents=True)
    dump(sp.coo_matrix((np.ones(1), ([0], [0])), shape=(1, 1)), raw / 'trnMat.pkl')
    with pytest.raises(DatasetNotFoundError) as err:
        Toy(tmp_path / 'toy')
    assert str(err.value).splitlines()[2:6] == [
        '  trnMat.pkl  present  pickled scipy.sparse matrix users x items (1,234 users, 56 '
        'items)',
        '  valMat.pkl  MISSING  pickled scipy.sparse matrix users x items (1,234 users, 56 '
        'items)',
        '  tstMat.pkl  MISSING  pickled scipy.sparse matrix users x items (1,234 users, 56 '
        'items)',
        'Paper (MMSSL, Table 1): 1,234 users, 56 items, 7,890 interactions, modalities: .']
    assert str(err.value).splitlines()[6:8] == ['Where to get them:', '  - https://a']


def test_bad_arguments_in_full(tmp_path):
    root = write_folder(tmp_path / 'd')
    with pytest.raises(ValueError) as err:
        MMSSLDataset(root, modalities=('text', 'image', 'text', 'image', 'x'))
    assert str(err.value) == ("modalities lists ['image', 'text'] more than once: ['text', "
                              "'image', 'text', 'image', 'x']")
    with pytest.raises(ValueError) as err:
        MMSSLDataset(root, raw_format='csv')
    assert str(err.value) == "raw_format must be one of ['json', 'pkl', 'train_mat'], got 'csv'"
    with pytest.raises(TypeError) as err:
        MMSSLDataset()
    assert str(err.value) == 'MMSSLDataset needs root=<folder holding raw/ or the raw files>'


def test_names_files_repr_stats_and_the_cache_key(tmp_path, monkeypatch, capsys):
    from mmssl_pyg.data.cache import load_processed

    root = write_folder(tmp_path / 'd')
    ds = MMSSLDataset(str(root), modalities='image', raw_format='json', log=False)
    assert ds.modalities == ['image'] and ds.raw_format == 'json' and ds.name == 'd'
    assert ds.raw_file_names == ['train.json', 'val.json', 'test.json', 'image_feat.npy']
    assert ds.processed_file_names == 'data_image.pt'
    assert (ds.num_users, ds.num_items) == (3, 5)
    assert repr(ds) == 'MMSSLDataset(d, users=3, items=5, train=5, modalities=[image])'
    assert ds.stats() == {'name': 'd', 'users': 3, 'items': 5, 'train': 5, 'val': 1, 'test': 2,
                          'interactions': 8, 'sparsity': 1 - 5 / 15, 'modalities': {'image': 4}}
    bare = MMSSLDataset(root, modalities=[], name='other', log=False)
    assert bare.name == 'other' and bare[0].name == 'other'
    assert bare.processed_file_names == 'data_no_features.pt'
    assert repr(bare) == 'MMSSLDataset(other, users=3, items=5, train=5, modalities=[none])'
    # the same files under another name: the cache is shared, the name is the one asked for
    assert MMSSLDataset(root, modalities=[], name='third', log=False)[0].name == 'third'

    def double(data):
        return data

    key = load_processed(MMSSLDataset(root, pre_transform=double, log=False)
                         .processed_paths[0])['key']
    assert key == {'raw_format': 'json', 'modalities': ['image'],
                   'pre_transform': '<function test_names_files_repr_stats_and_the_cache_key.'
                                    '<locals>.double>'}
    # what is printed when the processed file is (re)built; pytest's variable silences it
    monkeypatch.delenv('PYTEST_CURRENT_TEST', raising=False)
    capsys.readouterr()
    path = tmp_path / 'd' / 'processed' / 'data_image.pt'
    MMSSLDataset(root, modalities=['image'])
    assert capsys.readouterr().err == f'Re-processing {path}: built with other options ' \
                                      '(raw_format, modalities or pre_transform)\nProcessing...\n'
    MMSSLDataset(root, modalities=['image'])
    assert capsys.readouterr().err == ''
    (root / 'raw' / 'val.json').write_text('{"1": [4]}')
    MMSSLDataset(root, modalities=['image'])
    assert capsys.readouterr().err == (f'Re-processing {path}: raw file(s) changed since it was '
                                       'built: val.json\nProcessing...\n')
    torch.save(torch.zeros(1), path)
    MMSSLDataset(root, modalities=['image'])
    assert capsys.readouterr().err == (f'Re-processing {path}: written by another '
                                       'version\nProcessing...\n')
    MMSSLDataset(root, modalities=['image'], log=False)
    MMSSLDataset(root, modalities=['image'], log=False, force_reload=True)
    assert capsys.readouterr().err == ''


def test_load_reads_a_processed_file_and_names_the_file_it_refuses(tmp_path):
    root = copy_raw('tiktok-mini', tmp_path)
    ds = MMSSLDataset(str(root), log=False)
    image_only = MMSSLDataset(str(root), modalities=['image'], log=False)
    assert sorted(ds[0]['item'].keys()) == ['audio_feat', 'image_feat', 'num_nodes']
    ds.load(image_only.processed_paths[0])  # PyG's InMemoryDataset.load, weights_only
    assert sorted(ds[0]['item'].keys()) == ['image_feat', 'num_nodes']
    assert torch.equal(ds[0]['item'].image_feat, image_only[0]['item'].image_feat)
    other = tmp_path / 'other.pt'
    torch.save({'format': 'something else'}, other)  # loads safely, but is not a cache
    with pytest.raises(DatasetFormatError) as err:
        ds.load(str(other))
    assert str(err.value) == (f'{other} [processed file]: not a processed cache of this version '
                              'of mmssl-pyg. Fix: delete other.pt (it is only a cache of the raw '
                              'files) or load with --force-reload / force_reload=True to rebuild '
                              'it')


def _drop_modalities(data):
    del data.modalities
    return data


def test_repr_lists_every_modality_and_none_when_the_data_has_no_list(tmp_path):
    root = copy_raw('tiktok-mini', tmp_path)
    assert repr(MMSSLDataset(str(root), log=False)) == (
        'MMSSLDataset(tiktok-mini, users=1000, items=2872, train=6227, '
        'modalities=[image, audio])')
    # a pre_transform may return data without the modalities list: the features stay
    bare = MMSSLDataset(str(root), pre_transform=_drop_modalities, log=False)
    assert 'modalities' not in bare[0] and 'image_feat' in bare[0]['item']
    assert repr(bare) == ('MMSSLDataset(tiktok-mini, users=1000, items=2872, train=6227, '
                          'modalities=[none])')
