"""Adversarial dataset builds and files, round two (issue 26): build-dataset never deletes what
it did not create, replaces a dataset atomically, reads ids as typed, refuses bad separators;
feature files without columns or bytes are refused with one line."""
from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
from _adversarial import assert_user_error, copy_mini, run_cli, tree

from mmssl_pyg.data import load_dataset
from mmssl_pyg.data.builder import build_dataset
from mmssl_pyg.data.validation import DatasetFormatError

ROWS = [(f'u{u}', f'i{(u + j) % 7}') for u in range(10) for j in range(5)]


def write_csv(path: Path, rows=ROWS, header=('user_id', 'item_id'), sep=',') -> Path:
    path.write_text('\n'.join(sep.join(map(str, r)) for r in [header, *rows]) + '\n')
    return path


@pytest.fixture
def inter(tmp_path) -> Path:
    return write_csv(tmp_path / 'inter.csv')


def build(inter, out, **kw):
    return build_dataset(inter, out, progress=False, **kw)


def old_dataset(out: Path) -> dict[str, bytes]:
    """A finished build with a processed cache and a file of the user's own."""
    build(write_csv(out.parent / 'old.csv', [(f'x{u}', f'y{(u + j) % 5}') for u in range(8)
                                              for j in range(5)]), out)
    (out / 'processed').mkdir()
    (out / 'processed' / 'data.pt').write_bytes(b'old cache')
    (out / 'notes.txt').write_text('mine')
    return tree(out)


# --------------------------------------------------------------------------------------------
# reproduction 2: processed/ is never deleted without --force


def test_build_without_force_keeps_a_processed_folder(inter, tmp_path, capsys):
    out = tmp_path / 'ds'
    (out / 'processed').mkdir(parents=True)
    (out / 'processed' / 'data.pt').write_bytes(b'keep me')
    code, _, err = run_cli(['build-dataset', '--interactions', inter, '--output', out,
                            '--no-progress'], capsys)
    assert_user_error(code, err, 'already holds a dataset', 'processed', '--force')
    assert tree(out) == {'processed/data.pt': b'keep me'}


# --------------------------------------------------------------------------------------------
# reproduction 3: --force replaces a dataset atomically


@pytest.mark.parametrize('failing', ['train.json', 'id_map.json', 'build_info.json'])
def test_full_disk_during_a_forced_rebuild_leaves_the_old_dataset(failing, inter, tmp_path,
                                                                  monkeypatch):
    out = tmp_path / 'ds'
    before = old_dataset(out)
    real_dump = json.dump

    def dump(obj, f, *args, **kwargs):
        if Path(getattr(f, 'name', '')).name == failing:
            raise OSError(errno.ENOSPC, 'No space left on device')
        return real_dump(obj, f, *args, **kwargs)

    monkeypatch.setattr(json, 'dump', dump)
    with pytest.raises(OSError, match='no space left on device'):
        build(inter, out, overwrite=True)
    assert tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ['ds', 'inter.csv', 'old.csv']


def test_forced_rebuild_replaces_only_the_dataset(inter, tmp_path):
    out = tmp_path / 'ds'
    old_dataset(out)
    build(inter, out, overwrite=True)
    assert not (out / 'processed').exists()  # derived from the old raw files
    assert (out / 'notes.txt').read_text() == 'mine'  # not the command's to delete
    assert load_dataset(str(out))[0]['user'].num_nodes == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ['ds', 'inter.csv', 'old.csv']


def test_forced_rebuild_that_fails_on_bad_input_changes_nothing(tmp_path):
    out = tmp_path / 'ds'
    before = old_dataset(out)
    bad = write_csv(tmp_path / 'bad.csv', [('u1', 'i1'), ('', 'i2')])
    with pytest.raises(DatasetFormatError):
        build(bad, out, overwrite=True)
    assert tree(out) == before


# --------------------------------------------------------------------------------------------
# ids and separators as typed


@pytest.mark.parametrize('ids', [('1', '1.0'), ('7', '07'), ('2', '2e0')])
def test_two_spellings_of_one_numeric_id_are_refused(ids, tmp_path):
    rows = [(ids[0], 'a'), (ids[0], 'b'), (ids[1], 'c'), (ids[1], 'a'), ('3', 'b')]
    with pytest.raises(DatasetFormatError, match='two spellings'):
        build(write_csv(tmp_path / 'i.csv', rows), tmp_path / 'ds')
    assert not (tmp_path / 'ds').exists()


def test_two_spellings_of_one_item_id_are_refused(tmp_path):
    rows = [('a', '5'), ('a', '5.0'), ('b', '6'), ('b', '5')]
    with pytest.raises(DatasetFormatError, match='item_id'):
        build(write_csv(tmp_path / 'i.csv', rows), tmp_path / 'ds')


@pytest.mark.parametrize('sep', ['', ';;', '\n', '"'])
def test_bad_separator_is_one_line(sep, inter, tmp_path, capsys):
    code, _, err = run_cli(['build-dataset', '--interactions', inter, '--output',
                            tmp_path / 'ds', '--sep', sep, '--no-progress'], capsys)
    assert_user_error(code, err, '--sep', 'one character', 'Fix:')
    assert not (tmp_path / 'ds').exists()


# --------------------------------------------------------------------------------------------
# feature files that hold no feature


@pytest.fixture
def mini(tmp_path) -> Path:
    return copy_mini(tmp_path)


def test_zero_byte_feature_file_is_one_line(mini, capsys):
    (mini / 'raw' / 'image_feat.npy').write_bytes(b'')
    code, _, err = run_cli(['datasets', mini], capsys)
    assert_user_error(code, err, 'image_feat.npy', 'Fix:')


def test_feature_matrix_without_columns_is_refused(mini, capsys):
    items = np.load(mini / 'raw' / 'image_feat.npy').shape[0]
    np.save(mini / 'raw' / 'image_feat.npy', np.zeros((items, 0), dtype=np.float32))
    code, _, err = run_cli(['datasets', mini], capsys)
    assert_user_error(code, err, 'image_feat.npy', 'column')


@pytest.mark.parametrize('make', ['folder', 'symlink-loop'])
def test_feature_path_that_is_not_a_file_is_named_as_such(make, mini, capsys):
    path = mini / 'raw' / 'image_feat.npy'
    path.unlink()
    if make == 'folder':
        path.mkdir()
    else:
        os.symlink(path, path)
    code, _, err = run_cli(['datasets', mini], capsys)
    assert_user_error(code, err, 'image_feat.npy',
                      'a folder, not a file' if make == 'folder' else 'symbolic link')


def test_modality_typo_suggests_the_modality_that_exists(mini):
    from mmssl_pyg.data import DatasetNotFoundError
    with pytest.raises(DatasetNotFoundError, match="did you mean 'image'"):
        load_dataset(str(mini), modalities=['imag'])


def test_split_nested_too_deeply_names_the_file(mini, capsys):
    (mini / 'raw' / 'train.json').write_text('[' * 200_000 + ']' * 200_000)
    code, _, err = run_cli(['datasets', mini], capsys)
    assert_user_error(code, err, 'train.json', 'nested too deeply', 'Fix:')


def test_staging_folder_of_a_killed_build_is_removed(inter, tmp_path):
    left = tmp_path / '.ds.build-999999999-abcd1234'
    (left / 'raw').mkdir(parents=True)
    (left / 'raw' / 'train.json').write_text('{}')
    build(inter, tmp_path / 'ds')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['ds', 'inter.csv']


@pytest.mark.parametrize('option', ['--output', '--cache-dir'])
def test_empty_output_folder_is_refused(option, inter, tmp_path, capsys, monkeypatch):
    work = tmp_path / 'cwd'
    work.mkdir()
    monkeypatch.chdir(work)
    argv = ['build-dataset', '--interactions', inter, '--no-progress', option, '']
    argv += ['--output', tmp_path / 'ds'] if option != '--output' else []
    code, _, err = run_cli(argv, capsys)
    assert_user_error(code, err, option, 'empty', 'Fix:')
    assert list(work.iterdir()) == [] and not (tmp_path / 'ds').exists()
