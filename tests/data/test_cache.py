"""Adversarial data: crafted processed caches (code execution), raw files edited after the
first load, absurd id ranges, damaged matrices. Each case asserts the exact outcome: a clear
error naming the file and the fix, or the correct data."""
from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from mmssl_pyg.data import EDGE, DatasetFormatError, DatasetNotFoundError, load_dataset
from mmssl_pyg.data.cache import ProcessedCacheError, fingerprint_digest, load_processed
from mmssl_pyg.testing import (
    assert_no_marker,
    assert_user_error,
    copy_mini,
    payloads,
    run_cli,
    write_torch_payload,
)

MINI_COUNTS = (6227, 336, 664)


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / 'PWNED'
    yield path
    assert_no_marker(path)


@pytest.fixture
def mini(tmp_path) -> Path:
    return copy_mini(tmp_path)


def counts(ds) -> tuple[int, int, int]:
    store = ds[0][EDGE]
    return (store.edge_index.size(1), store.val_edge_index.size(1),
            store.test_edge_index.size(1))


def cache_path(root: Path, name: str = 'data_image+audio.pt') -> Path:
    return root / 'processed' / name


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def _double(data):
    data['item'].image_feat = data['item'].image_feat * 2
    return data


def test_the_payload_is_live_under_unrestricted_unpickling(tmp_path):
    """Control: the crafted file really runs code when a loader unpickles it fully (what
    PyG's cache loader falls back to), so the absent marker below means something."""
    live = tmp_path / 'LIVE'
    path = write_torch_payload(tmp_path / 'x.pt', payloads(live)['open'])
    torch.load(path, weights_only=False)
    assert live.exists()


@pytest.mark.parametrize('kind', ['open', 'os.system', 'exec'])
def test_crafted_processed_file_is_refused_without_running_code(mini, marker, kind):
    load_dataset(str(mini))
    path = write_torch_payload(cache_path(mini), payloads(marker)[kind])
    with pytest.raises(ProcessedCacheError) as info:
        load_dataset(str(mini))
    msg = str(info.value)
    assert str(path) in msg and '--force-reload' in msg and 'delete data_image+audio.pt' in msg
    assert 'could run code' in msg


def test_crafted_processed_file_before_first_load_is_refused(mini, marker):
    write_torch_payload(cache_path(mini), payloads(marker)['open'])
    with pytest.raises(ProcessedCacheError, match='data_image\\+audio.pt'):
        load_dataset(str(mini))


@pytest.mark.parametrize('name', ['pre_transform.pt', 'pre_filter.pt'])
def test_crafted_pyg_side_files_are_never_read(mini, marker, name):
    """PyG unpickles these two without weights_only; this loader never opens them."""
    write_torch_payload(mini / 'processed' / name, payloads(marker)['open'])
    assert counts(load_dataset(str(mini))) == MINI_COUNTS


@pytest.mark.parametrize('command', ['datasets', 'train'])
def test_crafted_processed_file_through_the_cli(mini, marker, command, capsys):
    write_torch_payload(cache_path(mini), payloads(marker)['os.system'])
    argv = ['datasets', str(mini)] if command == 'datasets' else \
        ['train', '--dataset', str(mini), '--model', 'lightgcn', '--wandb', 'disabled',
         '--run-dir', mini.parent / 'run', '--epochs', '1']
    code, _, err = run_cli(argv, capsys)
    assert_user_error(code, err, 'data_image+audio.pt', '--force-reload')
    assert not (mini.parent / 'run').exists()  # refused before anything was written


def test_force_reload_replaces_a_crafted_file_without_reading_it(mini, marker, capsys):
    path = write_torch_payload(cache_path(mini), payloads(marker)['open'])
    ds = load_dataset(str(mini), force_reload=True)
    assert counts(ds) == MINI_COUNTS
    assert load_processed(path)['format'] == 'mmssl-pyg-processed'  # a safe cache now
    write_torch_payload(path, payloads(marker)['exec'])
    code, out, err = run_cli(['datasets', str(mini), '--force-reload'], capsys)
    assert code == 0, err
    assert '6,227' in out


@pytest.mark.parametrize('content,needle', [
    (b'', 'empty'),
    (b'not a torch file at all', 'not a file of tensors'),
    (pickle.dumps({'format': 'x'}, protocol=2), 'not a PyTorch file'),
], ids=['empty', 'text', 'plain-pickle'])
def test_damaged_processed_files_name_the_file_and_fix(mini, content, needle):
    path = cache_path(mini)
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    with pytest.raises(ProcessedCacheError) as info:
        load_dataset(str(mini))
    assert needle in str(info.value) and str(path) in str(info.value)
    assert '--force-reload' in str(info.value)


def test_truncated_processed_file_is_refused(mini):
    ds = load_dataset(str(mini))
    path = Path(ds.processed_paths[0])
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ProcessedCacheError, match='truncated, damaged'):
        load_dataset(str(mini))


def test_processed_path_that_is_a_folder_is_refused(mini):
    cache_path(mini).mkdir(parents=True)
    with pytest.raises(ProcessedCacheError, match='data_image\\+audio.pt'):
        load_dataset(str(mini))


def test_safe_but_foreign_cache_is_rebuilt(mini):
    """A file that loads under weights_only but is not a cache of this version (a tensor, an
    older PyG-format cache) is rebuilt from the raw files: it cannot run code."""
    path = cache_path(mini)
    path.parent.mkdir(parents=True)
    torch.save(torch.zeros(3), path)
    assert counts(load_dataset(str(mini))) == MINI_COUNTS
    assert load_processed(path)['version'] == 1


def test_pyg_format_cache_of_an_older_version_is_rebuilt(mini):
    from torch_geometric.data import InMemoryDataset
    ds = load_dataset(str(mini))
    data = ds[0]
    data[EDGE].edge_index = data[EDGE].edge_index[:, :10]  # a stale, wrong cache
    InMemoryDataset.save([data], ds.processed_paths[0])
    assert counts(load_dataset(str(mini))) == MINI_COUNTS


def test_stale_tmp_files_of_dead_writers_are_removed(mini):
    processed = mini / 'processed'
    processed.mkdir()
    dead = processed / '.data_image+audio.pt.999999999.0a1b.tmp'
    alive = processed / f'.data_image+audio.pt.{os.getppid()}.0a1b.tmp'
    dead.write_bytes(b'half')
    alive.write_bytes(b'in progress')
    load_dataset(str(mini))
    assert not dead.exists() and alive.exists()


def test_added_interaction_is_picked_up(mini):
    assert counts(load_dataset(str(mini))) == MINI_COUNTS
    train = _read_json(mini / 'raw' / 'train.json')
    seen = set(train['0'])
    train['0'].append(next(i for i in range(2872) if i not in seen))
    (mini / 'raw' / 'train.json').write_text(json.dumps(train))
    assert counts(load_dataset(str(mini))) == (6228, 336, 664)


def test_same_size_same_mtime_edit_is_picked_up(mini):
    """The content hash decides, not the size or the modification time."""
    ds = load_dataset(str(mini))
    path = mini / 'raw' / 'val.json'
    st = path.stat()
    text = path.read_text()
    val = json.loads(text)
    user = next(u for u, items in val.items() if items and 10 <= items[0] < 99)
    old = val[user][0]
    new = old + 1 if old + 1 < 99 else old - 1
    edited = text.replace(f'"{user}": [{old}]', f'"{user}": [{new}]', 1)
    assert len(edited) == len(text) and edited != text
    path.write_text(edited)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    ei = load_dataset(str(mini))[0][EDGE].val_edge_index
    row = ei[:, ei[0] == int(user)]
    assert row[1].tolist() == [new]
    assert ds.data_digest != load_dataset(str(mini)).data_digest


def test_nan_written_into_features_after_load_is_an_error(mini):
    load_dataset(str(mini))
    path = mini / 'raw' / 'image_feat.npy'
    feat = np.load(path)
    feat[5, 0] = np.nan
    np.save(path, feat)
    with pytest.raises(DatasetFormatError) as info:
        load_dataset(str(mini))
    assert 'image_feat.npy' in str(info.value) and 'row 5' in str(info.value)


def test_raw_file_removed_after_load_is_an_error(mini):
    load_dataset(str(mini))
    (mini / 'raw' / 'audio_feat.npy').unlink()
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset(str(mini), modalities=['image', 'audio'])
    assert 'audio_feat.npy' in str(info.value) and 'MISSING' in str(info.value)


def test_touched_file_with_same_content_reuses_the_cache(mini):
    ds = load_dataset(str(mini))
    path = Path(ds.processed_paths[0])
    stamp = path.stat().st_mtime_ns
    raw = mini / 'raw' / 'train.json'
    os.utime(raw, ns=(raw.stat().st_atime_ns, raw.stat().st_mtime_ns + 10**9))
    assert counts(load_dataset(str(mini))) == MINI_COUNTS
    assert path.stat().st_mtime_ns == stamp  # not rebuilt


def test_force_reload_rebuilds_unchanged_data(mini):
    path = Path(load_dataset(str(mini)).processed_paths[0])
    os.utime(path, ns=(0, 0))
    assert counts(load_dataset(str(mini), force_reload=True)) == MINI_COUNTS
    assert path.stat().st_mtime_ns != 0


def test_changed_pre_transform_rebuilds(mini):
    plain = load_dataset(str(mini), modalities=['image'])[0]['item'].image_feat
    doubled = load_dataset(str(mini), modalities=['image'], pre_transform=_double)
    assert torch.equal(doubled[0]['item'].image_feat, plain * 2)
    path = Path(doubled.processed_paths[0])
    stamp = path.stat().st_mtime_ns
    load_dataset(str(mini), modalities=['image'], pre_transform=_double)
    assert path.stat().st_mtime_ns == stamp  # the same transform reuses the cache
    again = load_dataset(str(mini), modalities=['image'])
    assert torch.equal(again[0]['item'].image_feat, plain)


def test_fingerprint_is_the_sha256_of_each_raw_file(mini):
    ds = load_dataset(str(mini))
    for name in ('train.json', 'val.json', 'test.json', 'image_feat.npy', 'audio_feat.npy'):
        raw = (mini / 'raw' / name).read_bytes()
        assert ds.fingerprint[name]['sha256'] == hashlib.sha256(raw).hexdigest()
        assert ds.fingerprint[name]['size'] == len(raw)
    assert set(ds.fingerprint) == {'train.json', 'val.json', 'test.json', 'image_feat.npy',
                                   'audio_feat.npy'}
    assert ds.data_digest == fingerprint_digest(ds.fingerprint)


def test_digest_does_not_depend_on_the_folder(tmp_path):
    a = copy_mini(tmp_path / 'a')
    b = copy_mini(tmp_path / 'b')
    assert load_dataset(str(a)).data_digest == load_dataset(str(b)).data_digest


def test_processed_cache_error_names_the_file_and_both_fixes():
    from mmssl_pyg.data.cache import ProcessedCacheError
    err = ProcessedCacheError('/d/processed/data.pt', 'not a cache of this library')
    assert (err.path, err.field, err.problem) == ('/d/processed/data.pt', 'processed file',
                                                  'not a cache of this library')
    assert str(err) == ('/d/processed/data.pt [processed file]: not a cache of this library. '
                        'Fix: delete data.pt (it is only a cache of the raw files) or load with '
                        '--force-reload / force_reload=True to rebuild it')


class _Opaque:  # an object torch.load(weights_only=True) refuses
    pass


def test_a_pre_transform_storing_other_objects_is_refused_and_nothing_is_left(tmp_path):
    from mmssl_pyg.data.cache import save_processed
    path = tmp_path / 'processed' / 'data.pt'
    path.parent.mkdir()
    with pytest.raises(DatasetFormatError) as err:
        save_processed(path, {'x': _Opaque()}, {}, {'pre_transform': 'f'})
    e = err.value
    assert (e.path, e.field) == (str(path), 'pre_transform')
    assert e.problem.startswith('the processed data holds objects that cannot be stored '
                                'safely (not a safe processed cache (')
    assert e.fix == 'make pre_transform return tensors, numbers, strings, lists and dicts only'
    assert isinstance(e.__cause__, ProcessedCacheError)
    assert list(path.parent.iterdir()) == []  # the unsafe file is deleted, no temporary left
    saved = save_processed(path, {'x': torch.ones(2)}, {'a': {}}, {'k': 1})
    assert saved == path and load_processed(path)['data']['x'].tolist() == [1.0, 1.0]


def test_changed_files_lists_every_name_either_side_has_with_another_content():
    from mmssl_pyg.data.cache import changed_files
    a, b = {'sha256': 'x', 'size': 1}, {'sha256': 'y', 'size': 1}
    assert changed_files({'t.json': a, 'old.npy': a}, {'t.json': a, 'new.npy': a}) == [
        'new.npy', 'old.npy']
    assert changed_files({'t.json': a}, {'t.json': b}) == ['t.json']
    assert changed_files({'t.json': a}, {'t.json': {**a, 'size': 2}}) == ['t.json']
    assert changed_files({'t.json': a}, {'t.json': {**a, 'mtime_ns': 5}}) == []


def test_file_and_raw_fingerprints_and_their_digest_by_hand(tmp_path):
    from mmssl_pyg.data.cache import file_fingerprint, raw_fingerprint
    # more than one read chunk (4 MiB): the hash covers every chunk
    blob = bytes(range(256)) * (5 << 12) + b'tail'
    (tmp_path / 'b.npy').write_bytes(blob)
    (tmp_path / 'a.json').write_bytes(b'{}')
    os.utime(tmp_path / 'b.npy', ns=(1, 1_234_567_890_123))
    fp = file_fingerprint(tmp_path / 'b.npy')
    assert fp == {'size': len(blob), 'mtime_ns': 1_234_567_890_123,
                  'sha256': hashlib.sha256(blob).hexdigest()}
    raw = raw_fingerprint(str(tmp_path), ['b.npy', 'a.json'])
    assert list(raw) == ['a.json', 'b.npy'] and raw['b.npy'] == fp
    assert raw['a.json']['sha256'] == hashlib.sha256(b'{}').hexdigest()
    # the digest: one SHA-256 over 'name NUL size NUL sha256 LF' per name in sorted order
    text = ''.join(f'{n}\0{raw[n]["size"]}\0{raw[n]["sha256"]}\n' for n in ('a.json', 'b.npy'))
    assert fingerprint_digest(raw) == hashlib.sha256(text.encode()).hexdigest()
    assert fingerprint_digest({'b.npy': raw['b.npy'], 'a.json': raw['a.json']}) == \
        fingerprint_digest(raw)


def test_load_processed_returns_none_for_a_safe_file_that_is_not_a_current_cache(tmp_path):
    good = {'format': 'mmssl-pyg-processed', 'version': 1, 'fingerprint': {}, 'data': {}}
    path = tmp_path / 'data.pt'
    torch.save(good, path)
    assert load_processed(str(path)) == good
    for change in ({'format': 'pyg'}, {'version': 2}, {'data': [1]}, {'fingerprint': None}):
        torch.save({**good, **change}, path)
        assert load_processed(path) is None, change
    for missing in ('format', 'version', 'data', 'fingerprint'):
        torch.save({k: v for k, v in good.items() if k != missing}, path)
        assert load_processed(path) is None, missing
    torch.save([good], path)
    assert load_processed(path) is None


def test_load_processed_messages_in_full(tmp_path):
    fix = ('delete data.pt (it is only a cache of the raw files) or load with --force-reload / '
           'force_reload=True to rebuild it')
    path = tmp_path / 'data.pt'
    with pytest.raises(ProcessedCacheError) as err:
        load_processed(path)
    assert str(err.value) == (f'{path} [processed file]: cannot read it (No such file or '
                              f'directory). Fix: {fix}')
    assert err.value.__cause__ is not None
    path.write_bytes(b'')
    with pytest.raises(ProcessedCacheError) as err:
        load_processed(path)
    assert str(err.value) == (f'{path} [processed file]: the file is empty (an interrupted '
                              f'write?). Fix: {fix}')
    path.write_bytes(b'not a torch file at all')
    with pytest.raises(ProcessedCacheError) as err:
        load_processed(path)
    # the rest is torch's own reason, in brackets
    assert err.value.problem.startswith('not a safe processed cache (not a file of tensors and '
                                        'plain containers (')
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_processed_cache_error_survives_pickling():
    err = ProcessedCacheError('/d/processed/data.pt', 'the file is empty')
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is ProcessedCacheError
    assert (back.path, back.field, back.problem, back.fix) == (err.path, err.field,
                                                              err.problem, err.fix)
    assert str(back) == str(err)
