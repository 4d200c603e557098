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
