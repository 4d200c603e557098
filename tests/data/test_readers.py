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


JSON_FIX = 'write the split as a JSON object of user id -> list of item ids, e.g. {"0": [3, 5]}'


def _json_error(path, text):
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(DatasetFormatError) as err:
        read_json_split(str(path))
    return err.value


def test_read_json_split_pairs_in_file_order_and_repeated_keys(tmp_path):
    import warnings
    from pathlib import Path

    path = tmp_path / 'train.json'
    path.write_text('{"1": [3, 5], "0": [], "2": [7, -1]}')
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        pairs = read_json_split(str(path))
    assert isinstance(pairs.path, Path) and pairs.path == path and pairs.shape is None
    assert pairs.users.dtype == pairs.items.dtype == np.int64
    assert pairs.users.tolist() == [1, 1, 2, 2] and pairs.items.tolist() == [3, 5, 7, -1]
    assert pairs.num_pairs == 4
    path.write_text('{"1": [3], "0": [1], "1": [4]}')
    with pytest.warns(UserWarning) as rec:
        pairs = read_json_split(path)
    assert [str(w.message) for w in rec] == [
        f'{path}: 1 user id(s) appear more than once as keys; the item lists of every '
        'occurrence are kept']
    assert pairs.users.tolist() == [1, 0, 1] and pairs.items.tolist() == [3, 1, 4]
    path.write_text('{}')
    assert read_json_split(path).num_pairs == 0
    # read as bytes, so JSON's own encodings are understood whatever the locale: UTF-8 with a
    # byte-order mark (as some editors save it), UTF-16
    for encoding in ('utf-8-sig', 'utf-16'):
        path.write_bytes('{"2": [5, 7]}'.encode(encoding))
        pairs = read_json_split(path)
        assert (pairs.users.tolist(), pairs.items.tolist()) == ([2, 2], [5, 7]), encoding


def test_read_json_split_messages_in_full(tmp_path):
    path = tmp_path / 'train.json'
    err = _json_error(path, 'not json')
    assert (err.path, err.field, err.problem, err.fix) == (
        str(path), 'JSON', 'not valid JSON (Expecting value: line 1 column 1 (char 0))', JSON_FIX)
    assert isinstance(err.__cause__, ValueError)
    err = _json_error(path, b'{"0": [1], "\xff": [2]}')
    assert err.field == 'JSON' and err.problem.startswith("not valid JSON ('utf-8' codec")
    err = _json_error(path, '[' * 100_000)
    assert (err.path, err.field, err.problem, err.fix) == (
        str(path), 'JSON',
        'nested too deeply to be a split (lists inside lists, thousands of levels)', JSON_FIX)
    assert err.__cause__ is None and err.__suppress_context__
    err = _json_error(path, '{"0": [1], "a": [1], "-1": [2], "\u0663": [3]}')
    assert (err.field, err.problem, err.fix) == (
        'user "a"', "user id 'a' is not a non-negative integer (3 such key(s))",
        'use 0-based integer user ids written as strings, e.g. {"17": [3, 5]}')
    err = _json_error(path, '{"0": [1], "99999999999999999999": [1]}')
    assert (err.path, err.field, err.problem, err.fix) == (
        str(path), 'user ids',
        'a user id does not fit in 64 bits (Python int too large to convert to C long)',
        'use 0-based contiguous user ids')
    err = _json_error(path, '{"0": [1, 99999999999999999999]}')
    assert (err.path, err.field, err.problem, err.fix) == (
        str(path), 'item ids',
        'an item id does not fit in 64 bits (Python int too large to convert to C long)',
        'use 0-based contiguous item ids')
    item_fix = 'write item ids as JSON integers, e.g. "17": [3, 5]'
    # the user of the first bad item: the first of user "1"'s items, after user "0"'s one
    err = _json_error(path, '{"0": [1], "1": [true, 2]}')
    assert (err.field, err.problem, err.fix) == (
        'user "1"', 'item id true (a JSON boolean) is not an integer', item_fix)
    err = _json_error(path, '{"0": [], "1": [1], "2": [2, "x"]}')
    assert (err.field, err.problem) == ('user "2"', 'item id "x" (a JSON string) is not an '
                                                    'integer')
    err = _json_error(path, '{"0": [1.0]}')
    assert err.problem == 'item id 1.0 (a JSON number) is not an integer'
    err = _json_error(path, '{"0": [null]}')
    assert err.problem == 'item id null (a JSON null) is not an integer'
    err = _json_error(path, '{"0": [[1]]}')
    assert err.problem == 'item id [1] (a JSON list) is not an integer'
    err = _json_error(path, '{"0": [1], "4": 7}')
    assert (err.field, err.problem, err.fix) == (
        'user "4"', 'expected a list of item ids, got 7 (a JSON integer)',
        'map each user id to a JSON list of integers, e.g. "17": [3, 5]')
    for text, shown in (('5.5', '5.5 (a JSON number)'), ('null', 'null (a JSON null)'),
                        ('true', 'true (a JSON boolean)'), ('[1, 2]', '[1, 2] (a JSON list)')):
        err = _json_error(path, text)
        assert (err.field, err.problem, err.fix) == (
            'top level', 'expected a JSON object of user id -> list of item ids, got ' + shown,
            JSON_FIX)


SPARSE_FIX_REBUILD = 'rebuild the file from the interactions; ' + (
    'save the split as pickle.dump(scipy.sparse.coo_matrix((ones, (users, items)), '
    'shape=(num_users, num_items)), f)')


def test_read_sparse_matrix_pairs_row_major_without_explicit_zeros(tmp_path):
    path = tmp_path / 'trnMat.pkl'
    mat = sp.coo_matrix((np.array([1., 1., 0., 3., 1.]),
                         (np.array([2, 0, 1, 0, 0], dtype=np.int32), [0, 2, 1, 1, 2])),
                        shape=(3, 4))
    dump(mat, path)
    with pytest.warns(UserWarning) as rec:
        pairs = read_sparse_matrix(str(path))
    assert [str(w.message) for w in rec] == [
        f'{path}: 1 stored entries are explicit zeros and are not counted as interactions']
    assert pairs.users.dtype == pairs.items.dtype == np.int64
    assert pairs.users.tolist() == [0, 0, 0, 2] and pairs.items.tolist() == [1, 2, 2, 0]
    assert pairs.shape == (3, 4) and type(pairs.shape[0]) is int and pairs.path == path
    dump(sp.csr_matrix(mat), path)  # another sparse format: coalesced, the zero kept stored
    with pytest.warns(UserWarning, match='1 stored entries'):
        pairs = read_sparse_matrix(path)
    assert pairs.users.tolist() == [0, 0, 2] and pairs.items.tolist() == [1, 2, 0]


def test_read_sparse_matrix_messages_in_full(tmp_path):
    path = tmp_path / 'trnMat.pkl'

    def error(obj):
        dump(obj, path)
        with pytest.raises(DatasetFormatError) as err:
            read_sparse_matrix(path)
        return err.value

    err = error({'not': 'a matrix'})
    assert (err.field, err.problem, err.fix) == (
        'pickle', 'expected a 2-D scipy.sparse matrix, got dict', SPARSE_FIX)
    assert error(np.eye(3)).problem == 'expected a 2-D scipy.sparse matrix, got ndarray'
    assert error(sp.coo_array(np.array([1.0, 0.0, 2.0]))).problem == (
        'expected a 2-D scipy.sparse matrix, got coo_array')
    path.write_bytes(b'garbage')
    with pytest.raises(DatasetFormatError) as info:
        read_sparse_matrix(path)
    assert info.value.field == 'pickle' and info.value.fix == SPARSE_FIX
    assert info.value.problem.startswith('not a pickled scipy.sparse matrix (')
    for row, col, where in (([0, 3], [0, 1], 'row'), ([0, -1], [0, 1], 'col'),
                            ([0, 1], [0, 3], 'col'), ([-1, 1], [0, 1], 'row')):
        mat = sp.coo_matrix((np.ones(2), ([0, 1], [0, 1])), shape=(3, 3))
        mat.row, mat.col = np.array(row, dtype=np.int32), np.array(col, dtype=np.int32)
        err = error(mat)
        assert (err.field, err.problem, err.fix) == (
            'matrix', 'the sparse matrix is inconsistent (an index lies outside the declared '
            'shape (3, 3))', SPARSE_FIX_REBUILD), (row, col, where)
    mat = sp.coo_matrix((np.ones(2), ([0, 1], [0, 1])), shape=(3, 3))
    mat.data = np.ones(1)
    assert error(mat).problem == ('the sparse matrix is inconsistent (row, col and data arrays '
                                  'differ in length)')
    mat = sp.csr_matrix((np.ones(2), ([0, 1], [0, 1])), shape=(3, 3))
    mat.indices[1] = 7
    err = error(mat)
    assert err.field == 'matrix' and err.fix == SPARSE_FIX_REBUILD
    assert err.problem.startswith('the sparse matrix is inconsistent (')


def test_read_features_casts_to_contiguous_float32(tmp_path):
    from mmssl_pyg.data.readers import read_features

    path = tmp_path / 'image_feat.npy'
    for arr in (np.array([[1.5, -2.0], [0.25, 3.0]], dtype=np.float16),
                np.array([[1.5, -2.0], [0.25, 3.0]], dtype=np.float64),
                np.asfortranarray(np.array([[1.5, -2.0], [0.25, 3.0]]))):
        np.save(path, arr)
        feat = read_features(str(path))
        assert feat.dtype == np.float32 and feat.flags['C_CONTIGUOUS']
        assert feat.tolist() == [[1.5, -2.0], [0.25, 3.0]]
    np.save(path, np.array([[7, 2**40]], dtype=np.int64))
    assert read_features(path).tolist() == [[7.0, 2.0 ** 40]]


def test_read_features_messages_in_full(tmp_path):
    import warnings

    from mmssl_pyg.data.readers import read_features

    path = tmp_path / 'image_feat.npy'

    def error():
        with pytest.raises(DatasetFormatError) as err:
            read_features(path)
        return err.value

    err = error()
    assert (err.path, err.field, err.problem, err.fix) == (
        str(path), 'file', 'feature file not found', 'put image_feat.npy (one row per item) '
        'next to the split files, or leave that modality out with modalities=[...]')
    path.write_bytes(b'')
    err = error()
    assert (err.path, err.field, err.problem, err.fix) == (
        str(path), 'format', 'empty or truncated (0 bytes; No data left in file)',
        'write the file again with np.save(path, feat.astype(np.float32))')
    np.save(path, np.array([[1], ['a']], dtype=object), allow_pickle=True)
    err = error()
    assert (err.path, err.field, err.problem, err.fix) == (
        str(path), 'format', 'not a readable .npy array (Object arrays cannot be loaded when '
        'allow_pickle=False)', 'save the features with np.save(path, feat.astype(np.float32))')
    with open(path, 'wb') as f:
        np.savez(f, a=np.ones((2, 2)))
    err = error()
    assert (err.path, err.field, err.problem, err.fix) == (
        str(path), 'format', 'an .npz archive, not a single .npy array',
        'save one array per modality with np.save')
    np.save(path, np.ones(3, dtype=np.float32))
    assert error().field == 'shape'
    # 1e39 is finite in float64 but beyond float32: it becomes inf and is refused, with no
    # overflow warning from the cast
    np.save(path, np.array([[1.0], [1e39], [2.0]]))
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        err = error()
    assert (err.path, err.field, err.problem) == (str(path), 'values', '1 of 3 rows hold NaN or '
                                                  'infinite values (first: row 1, item 1)')


def test_modality_from_file_names():
    from mmssl_pyg.data.readers import modality_from_file

    assert modality_from_file('image_feat.npy') == 'image'
    assert modality_from_file('a_b_feat.npy') == 'a_b'
    assert modality_from_file('_feat.npy') is None
    assert modality_from_file('image.npy') is None
    assert modality_from_file('image_feat.npz') is None


@pytest.mark.skipif(hasattr(__import__('mmssl_pyg.data.readers', fromlist=['_']),
                            'x_read_sparse_matrix__mutmut_orig'),
                    reason="mutmut's trampolines add stack frames between the caller and "
                    'the warning, so stacklevel is checked in the plain suite only')
def test_reader_warnings_point_at_the_callers_line(tmp_path):
    import inspect

    dump(sp.coo_matrix((np.array([0.0, 1.0]), ([0, 1], [0, 1])), shape=(2, 2)),
         tmp_path / 'trnMat.pkl')
    (tmp_path / 'train.json').write_text('{"0": [1], "0": [2]}')
    with pytest.warns(UserWarning) as rec:
        line = inspect.currentframe().f_lineno + 1
        read_sparse_matrix(tmp_path / 'trnMat.pkl')
        read_json_split(tmp_path / 'train.json')
    assert [(w.filename, w.lineno) for w in rec] == [(__file__, line), (__file__, line + 1)]
