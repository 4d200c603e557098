"""Dataset loaders on the bundled real data, and every bad-input case on small fixture folders.

Every test works on copies under ``tmp_path``: nothing is written into the repository's
``datasets/*/processed`` folders."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from mmssl_pyg.data import (
    DatasetFormatError,
    DatasetNotFoundError,
    read_json_split,
    read_sparse_matrix,
)
from mmssl_pyg.testing import dump, load_error, write_folder


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


@pytest.mark.parametrize('text, shown', [
    ('{"0": [1]}', '{"0": [1]} (a JSON object)'),
    # 60 characters are shown whole, 61 are cut to their first 57 and '...'
    ('"' + 'x' * 58 + '"', '"' + 'x' * 58 + '" (a JSON string)'),
    ('"' + 'x' * 59 + '"', '"' + 'x' * 56 + '... (a JSON string)')])
def test_a_wrong_json_value_is_shown_with_its_json_type(tmp_path, text, shown):
    path = tmp_path / 'train.json'
    if not text.startswith('{'):  # at the top level
        path.write_text(text)
        with pytest.raises(DatasetFormatError) as err:
            read_json_split(path)
        assert err.value.problem == ('expected a JSON object of user id -> list of item ids, '
                                     'got ' + shown)
    # where a user's item list belongs
    path.write_text(f'{{"3": {text}}}')
    with pytest.raises(DatasetFormatError) as err:
        read_json_split(path)
    assert err.value.field == 'user "3"'
    assert err.value.problem == f'expected a list of item ids, got {shown}'


@pytest.mark.parametrize('reader, what, fix', [
    (read_json_split, 'split file', 'put train.json next to the other raw files'),
    (read_sparse_matrix, 'matrix file', 'put train.json next to the other raw files')])
def test_open_errors_name_the_file_the_problem_and_the_fix(tmp_path, reader, what, fix):
    path = tmp_path / 'train.json'
    with pytest.raises(DatasetFormatError) as err:
        reader(path)
    assert (err.value.path, err.value.field, err.value.problem, err.value.fix) == (
        str(path), 'file', f'{what} not found', fix)
    path.mkdir()  # a folder where the file should be
    with pytest.raises(DatasetFormatError) as err:
        reader(path)
    assert (err.value.path, err.value.field, err.value.problem, err.value.fix) == (
        str(path), 'file', f'cannot read {what} (Is a directory)',
        'check that the path is a readable file (permissions, not a folder, not a broken link)')


SPARSE_FIX = ('save the split as pickle.dump(scipy.sparse.coo_matrix((ones, (users, items)), '
              'shape=(num_users, num_items)), f)')


@pytest.mark.parametrize('protocol, fix_imports', [(0, True), (1, True), (1, False), (2, True),
                                                   (5, True)])
def test_sparse_matrices_of_every_pickle_protocol_load(tmp_path, protocol, fix_imports):
    # protocols 0 and 1 rebuild objects through copyreg._reconstructor and builtins.object,
    # named copy_reg and __builtin__ (Python 2's modules) unless fix_imports is off; protocols
    # 0-2 store bytes through _codecs.encode
    import pickle
    path = tmp_path / 'trnMat.pkl'
    mat = sp.coo_matrix((np.ones(3), ([0, 1, 2], [2, 0, 1])), shape=(3, 4))
    path.write_bytes(pickle.dumps(mat, protocol=protocol, fix_imports=fix_imports))
    pairs = read_sparse_matrix(path)
    assert pairs.users.tolist() == [0, 1, 2] and pairs.items.tolist() == [2, 0, 1]
    assert pairs.shape == (3, 4)


@pytest.mark.parametrize('module, name', [
    ('numpy', 'load'),  # an allowed module, a name it may not give
    ('scipy.sparse', 'issparse'),  # scipy.sparse, but not a matrix class
    ('os', 'system')])
def test_the_pickle_reader_refuses_every_other_global(tmp_path, module, name):
    path = tmp_path / 'trnMat.pkl'
    path.write_bytes(f'c{module}\n{name}\n.'.encode())  # protocol 0: GLOBAL, STOP
    with pytest.raises(DatasetFormatError) as err:
        read_sparse_matrix(path)
    assert (err.value.field, err.value.problem, err.value.fix) == (
        'pickle', f'not a pickled scipy.sparse matrix (refusing to load {module}.{name})',
        SPARSE_FIX)
