"""Tests of ``mmssl_pyg/data/validation.py``: the error types and the cross-file checks.

The checks on split files run through the folder reader (``tests/data/test_folder.py``);
here the error classes' contract and the messages are checked in full."""
from __future__ import annotations

import pickle

import pytest

from mmssl_pyg.data.validation import (
    DatasetFormatError,
    DatasetNotFoundError,
    check_feature_rows,
)


def test_dataset_not_found_error_fields_summary_and_pickling():
    message = 'tiktok is missing train.json\n  train.json: get it from ...'
    err = DatasetNotFoundError('/data/tiktok/raw', message, ['train.json'])
    assert isinstance(err, DatasetFormatError) and isinstance(err, FileNotFoundError)
    assert (err.path, err.field, err.problem, err.fix) == ('/data/tiktok/raw', 'raw files',
                                                           message, '')
    assert err.missing == ['train.json'] and err.args == (message,) and str(err) == message
    assert err.summary == 'tiktok is missing train.json'  # the first line, by default
    given = DatasetNotFoundError('/d', message, summary='one line with the fix')
    assert given.summary == 'one line with the fix' and given.missing == []
    back = pickle.loads(pickle.dumps(given))
    assert (type(back), back.path, back.problem, back.missing, back.summary) == (
        DatasetNotFoundError, '/d', message, [], 'one line with the fix')


def test_feature_files_that_disagree_name_every_count_and_the_fix():
    assert check_feature_rows({'image': 5, 'text': 5}, '/raw') == 5
    with pytest.raises(DatasetFormatError) as err:
        check_feature_rows({'image': 5, 'text': 4, 'audio': 5}, '/raw')
    assert str(err.value) == (
        '/raw [rows]: feature files disagree on the number of items (image: 5 rows, text: 4 '
        'rows, audio: 5 rows). Fix: every <modality>_feat.npy needs exactly one row per item '
        '(row i = item i); regenerate the short ones or leave that modality out with '
        'modalities=[...]')


def test_feature_matrix_checks_name_the_shape_dtype_or_row_in_full():
    import numpy as np

    from mmssl_pyg.data.validation import check_features

    def message(feat):
        with pytest.raises(DatasetFormatError) as err:
            check_features('/raw/image_feat.npy', feat)
        return str(err.value)

    check_features('/raw/image_feat.npy', np.ones((1, 3), dtype=np.float32))  # one item is fine
    check_features('/raw/image_feat.npy', np.ones((2, 1), dtype=np.int64))
    assert message(np.ones(3)) == (
        '/raw/image_feat.npy [shape]: expected a 2-D array [num_items, dim], got shape (3,). '
        'Fix: save one row per item, e.g. np.save(path, feat.reshape(num_items, -1))')
    empty_fix = ('Fix: save one row of at least one value per item, or delete the file to '
                 'leave that modality out')
    assert message(np.ones((3, 0))) == ('/raw/image_feat.npy [shape]: the feature matrix has '
                                        'shape (3, 0): no column, so it holds no feature. '
                                        + empty_fix)
    assert message(np.ones((0, 3))) == ('/raw/image_feat.npy [shape]: the feature matrix has '
                                        'shape (0, 3): no row, so it holds no feature. '
                                        + empty_fix)
    assert message(np.array([['a']])) == (
        "/raw/image_feat.npy [dtype]: expected a numeric array, got dtype <U1. Fix: save the "
        "features as float32 (np.save(path, feat.astype(np.float32)))")
    feat = np.ones((4, 2), dtype=np.float32)
    feat[2, 1], feat[3, 0] = np.nan, np.inf
    assert message(feat) == (
        '/raw/image_feat.npy [values]: 2 of 4 rows hold NaN or infinite values (first: row 2, '
        'item 2). Fix: re-extract the features of those items, or replace them explicitly (e.g. '
        'by the mean row) before saving; they are never filled in here')

