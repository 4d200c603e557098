"""Tests of ``mmssl_pyg/data/catalog.py``.

The dataset builder (mmssl_pyg.data.builder), its encoders and the MovieLens-100K recipe.

Expected counts are worked out by hand in the comments; the encoders used here are small
deterministic functions, except in the one test that loads the real all-MiniLM-L6-v2 (skipped
when the `features` extra is not installed).

Dataset loaders on the bundled real data, and every bad-input case on small fixture folders.

Every test works on copies under ``tmp_path``: nothing is written into the repository's
``datasets/*/processed`` folders."""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from mmssl_pyg.data import (
    EDGE,
    REV_EDGE,
    Allrecipes,
    AmazonBaby,
    DatasetFormatError,
    DatasetNotFoundError,
    RecGraph,
    TikTok,
    TikTokMini,
    datasets_command,
    load_dataset,
)
from mmssl_pyg.testing import copy_raw, split_counts


@pytest.fixture(scope='module')
def tiktok_root(tmp_path_factory) -> Path:
    return copy_raw('tiktok', tmp_path_factory.mktemp('tiktok'))


@pytest.fixture(scope='module')
def mini_root(tmp_path_factory) -> Path:
    return copy_raw('tiktok-mini', tmp_path_factory.mktemp('mini'))


@pytest.fixture(scope='module')
def baby_root(tmp_path_factory) -> Path:
    return copy_raw('amazon-baby-interactions', tmp_path_factory.mktemp('baby'))


def no_data_warnings(record) -> bool:
    return not any('duplicate' in str(w.message) or 'appear in both' in str(w.message)
                   for w in record)


def mark_processed(data):
    data.marked = torch.tensor([1])
    return data


def test_movielens_not_built_says_how_to_build(tmp_path):
    with pytest.raises(DatasetNotFoundError, match='build-dataset --recipe movielens-100k '
                       '--output'):
        load_dataset('movielens-100k', root=tmp_path / 'ml')
    assert not (tmp_path / 'ml').exists()


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


def test_datasets_command(tmp_path):
    copy_raw('tiktok-mini', tmp_path)
    listing = datasets_command(None, root=tmp_path)
    rows = {line.split()[0]: line for line in listing.splitlines() if line.strip()}
    assert 'present' in rows['tiktok-mini'] and 'image, audio' in rows['tiktok-mini']
    assert 'missing' in rows['amazon-baby'] and 'missing' in rows['tiktok']
    table = datasets_command(['tiktok-mini'], root=tmp_path)
    assert '1,000' in table and '2,872' in table and '6,227' in table


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


def test_datasets_listing_in_full(tmp_path):
    """Every registry entry, in registry order: its raw-file status against the files its
    modalities need, the feature files found, its folder; columns left-aligned two spaces
    apart, the folder last; then the hint line."""
    from mmssl_pyg.data.catalog import DATASETS
    copy_raw('tiktok-mini', tmp_path)
    copy_raw('amazon-baby-interactions', tmp_path)  # declares no modality: its splits suffice
    baby = tmp_path / 'amazon-baby' / 'raw'
    baby.mkdir(parents=True)
    (baby / 'train.json').write_text('{}')
    (baby / 'image_feat.npy').write_bytes(b'')
    expected = {
        'tiktok': ('missing (no raw folder)', 'none'),
        'tiktok-mini': ('present', 'image, audio'),
        'amazon-baby': ('missing val.json, test.json, text_feat.npy', 'image'),
        'amazon-sports': ('missing (no raw folder)', 'none'),
        'allrecipes': ('missing (no raw folder)', 'none'),
        'movielens-100k': ('missing (no raw folder)', 'none'),
        'amazon-baby-interactions': ('present', 'none'),
        'amazon-sports-interactions': ('missing (no raw folder)', 'none'),
    }
    assert list(DATASETS) == list(expected)
    rows = [('name', 'raw files', 'feature files', 'folder')] + [
        (k, status, mods, str(tmp_path / k)) for k, (status, mods) in expected.items()]
    w = [max(len(r[j]) for r in rows) for j in range(3)]
    assert w == [len('amazon-sports-interactions'),
                 len('missing val.json, test.json, text_feat.npy'), len('feature files')]
    lines = [f'{a:<{w[0]}}  {b:<{w[1]}}  {c:<{w[2]}}  {d}' for a, b, c, d in rows]
    lines += ['', 'Statistics: mmssl-pyg datasets NAME [NAME ...] (a folder path works too); '
              'for a missing dataset this says which files to get and where.']
    assert datasets_command(None, root=tmp_path) == '\n'.join(lines)
    assert datasets_command([], root=tmp_path) == '\n'.join(lines)


def test_named_datasets_load_from_the_given_root_and_are_not_reprocessed(tmp_path):
    from mmssl_pyg.data import format_stats
    root = copy_raw('tiktok-mini', tmp_path)
    test_file = root / 'raw' / 'test.json'
    pairs = json.loads(test_file.read_text())
    dropped = pairs.pop(next(iter(pairs)))  # this copy differs from the bundled one
    test_file.write_text(json.dumps(pairs))
    table = datasets_command(['tiktok-mini'], root=tmp_path)
    assert table == format_stats(load_dataset('tiktok-mini', root=root))
    test_row = [ln for ln in table.splitlines() if ln.startswith('Test')]
    assert test_row == [f'Test{" " * 12}  {664 - len(dropped):>11,}']
    # a folder path is loaded as a folder, wherever --root points
    assert datasets_command([str(root)], root=tmp_path / 'elsewhere') == table
    processed = next((root / 'processed').glob('*.pt'))
    before = processed.stat().st_mtime_ns
    datasets_command(['tiktok-mini'], root=tmp_path)  # read back, not processed again
    assert processed.stat().st_mtime_ns == before
    datasets_command(['tiktok-mini'], root=tmp_path, force_reload=True)
    assert processed.stat().st_mtime_ns != before


def test_is_dataset_folder():
    from mmssl_pyg.data.catalog import is_dataset_folder
    for name in ('tiktok', 'TikTok_Mini', ' movielens-100k '):
        assert not is_dataset_folder(name), name  # registry names and aliases
    for name in ('./tiktok', 'datasets/tiktok', '~/data', 'my-folder'):
        assert is_dataset_folder(name), name  # paths, and names the registry lacks


def test_movielens_not_built_message_in_full(tmp_path, monkeypatch):
    from mmssl_pyg.data import catalog
    from mmssl_pyg.data.catalog import MovieLens100K
    fix = ("It is built on your machine, never downloaded or committed (the MovieLens terms "
           "forbid redistribution). Build it: pip install -e '.[features]' && pip install "
           "--no-deps recbole==1.2.1 && mmssl-pyg build-dataset --recipe movielens-100k")
    root = tmp_path / 'ml'
    with pytest.raises(DatasetNotFoundError) as err:
        MovieLens100K(root=root)
    files = 'train.json, val.json, test.json, text_feat.npy'
    assert err.value.summary == (f'MovieLens-100K is not built yet in {root} (missing: '
                                 f'{files}). {fix} --output {root}  (or, in a checkout, make '
                                 f'movielens-100k)')
    # at the default folder the build command needs no --output
    monkeypatch.setattr(catalog, 'default_root', lambda name: root)
    with pytest.raises(DatasetNotFoundError) as err:
        MovieLens100K(root=root)
    assert err.value.summary == (f'MovieLens-100K is not built yet in {root} (missing: '
                                 f'{files}). {fix}  (or, in a checkout, make movielens-100k)')


def test_names_and_relative_folders_resolve_as_the_cli_documents(tmp_path, monkeypatch):
    from mmssl_pyg.data import catalog, format_stats
    copy_raw('tiktok-mini', tmp_path / 'work')
    monkeypatch.chdir(tmp_path / 'work')
    table = format_stats(load_dataset('./tiktok-mini'))
    # a relative folder, with or without './', is read where it is, not under --root
    for name in ('./tiktok-mini', 'tiktok-mini/'):
        assert datasets_command([name], root=tmp_path / 'elsewhere') == table
    # without --root the listing shows each registry name's default folder
    monkeypatch.setattr(catalog, 'default_root', lambda key: tmp_path / 'default' / key)
    listing = datasets_command(None).splitlines()
    assert listing[1].endswith(f'  {tmp_path / "default" / "tiktok"}')


def test_not_registered_name_without_a_slash_is_a_folder_of_the_working_directory(
        tmp_path, monkeypatch):
    from mmssl_pyg.data import format_stats
    copy_raw('tiktok-mini', tmp_path)
    (tmp_path / 'tiktok-mini').rename(tmp_path / 'my-copy')
    monkeypatch.chdir(tmp_path)
    assert datasets_command(['my-copy'], root=tmp_path / 'elsewhere') == format_stats(
        load_dataset(str(tmp_path / 'my-copy')))


def test_load_dataset_passes_its_arguments_on(tmp_path, monkeypatch):
    """Each argument of load_dataset reaches the dataset: modalities (a registry name's own
    default included), the default folder of a registry name, force_reload, and a folder
    path's modalities; an unknown name gets the whole message."""
    from mmssl_pyg.data import catalog
    root = copy_raw('tiktok-mini', tmp_path)
    assert load_dataset('tiktok-mini', root=root)[0].modalities == ['image', 'audio']
    assert load_dataset('TikTok_Mini', root=root, modalities=['audio'])[0].modalities == [
        'audio']
    # without a root, a registry name loads from its default folder
    monkeypatch.setattr(catalog, 'default_root', lambda key: tmp_path / key)
    dataset = load_dataset('tiktok-mini', modalities=[])
    assert Path(dataset.root) == root and dataset[0].modalities == []
    # force_reload re-processes, for a registry name and for a folder path
    path = Path(dataset.processed_paths[0])
    for name in ('tiktok-mini', str(root)):
        os.utime(path, ns=(0, 0))
        load_dataset(name, modalities=[], force_reload=True)
        assert path.stat().st_mtime_ns != 0, name
    folder = load_dataset(str(root), modalities=['image'])
    assert folder[0].modalities == ['image'] and 'audio_feat' not in folder[0]['item']
    # the *-interactions names default to no modality, and an explicit choice still wins
    baby = copy_raw('amazon-baby-interactions', tmp_path)
    assert load_dataset('amazon-baby-interactions', root=baby)[0].modalities == []
    with pytest.raises(ValueError) as err:
        load_dataset(str(tmp_path / 'nowhere'))
    assert str(err.value) == (
        f"unknown dataset {str(tmp_path / 'nowhere')!r}: not a known name and not a folder. "
        'Known names: tiktok, tiktok-mini, amazon-baby, amazon-sports, allrecipes, '
        'movielens-100k, amazon-baby-interactions, amazon-sports-interactions; or pass the path '
        'to a folder holding train.json, val.json, test.json and <modality>_feat.npy files')
