"""Tests of ``mmssl_pyg/data/validation.py``: the error types and the cross-file checks.

The checks on split files run through the folder reader (``tests/data/test_folder.py``);
here the error classes' contract and the messages are checked in full."""
from __future__ import annotations

import pickle

import pytest

from mmssl_pyg.data import validation
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



def test_an_empty_split_is_refused_with_the_reason_every_split_is_needed():
    from mmssl_pyg.data.validation import check_nonempty
    check_nonempty('/raw/val.json', 'val', 1)
    with pytest.raises(DatasetFormatError) as err:
        check_nonempty('/raw/val.json', 'val', 0)
    assert str(err.value) == (
        '/raw/val.json [interactions]: the val split has no (user, item) pairs. Fix: put at '
        'least one interaction in the val split (every split is needed: train for fitting, '
        'val for early stopping, test for the final report)')


def test_ids_outside_the_node_counts_name_the_first_pair_and_the_count():
    import numpy as np

    from mmssl_pyg.data.validation import check_id_range
    users, items = np.array([0, 1, 2, 3]), np.array([0, 4, 5, -1])
    check_id_range('/t.json', users[:1], items[:1], 1, 1, 'x')  # the largest ids that fit
    with pytest.raises(DatasetFormatError) as err:
        check_id_range('/t.json', users, items, 4, 5, 'the rows of image_feat.npy')
    assert str(err.value) == (
        '/t.json [user "2"]: item id 5 is outside [0, 5) (2 pair(s) out of range; 5 items per '
        'the rows of image_feat.npy). Fix: item ids must be 0-based row numbers of the feature '
        'files; re-index the items or supply feature files with a row for every item')
    users = np.array([-2, 0, 7])
    with pytest.raises(DatasetFormatError) as err:
        check_id_range('/t.json', users, np.zeros(3, dtype=np.int64), 7, 1, 'x')
    assert str(err.value) == (
        '/t.json [user "-2"]: user id -2 is outside [0, 7) (2 pair(s) out of range; 7 users per '
        'the largest user id). Fix: user ids must be 0-based and below the user count of the '
        'interaction matrix')
    with pytest.raises(DatasetFormatError, match=r'7 users per trnMat\.pkl\)'):
        check_id_range('/t.json', users, np.zeros(3, dtype=np.int64), 7, 1, 'x', 'trnMat.pkl')


def test_unused_ids_warn_up_to_the_limit_and_are_refused_beyond_it():
    import warnings

    import numpy as np

    from mmssl_pyg.data.validation import MAX_UNUSED_IDS, check_id_span
    used = np.array([0, 1, 1, 2])  # 3 distinct ids
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert check_id_span('/raw', 'item', 3, used, 'the largest item id') == 0
    with pytest.warns(UserWarning) as rec:
        assert check_id_span('/raw', 'item', 5, used, 'the largest item id') == 2
    assert str(rec[0].message) == (
        '/raw: 2 of the 5 items (counted from the largest item id) appear in no split; they '
        'are kept as items without interactions; remap the ids if that is not intended')
    limit = 3 + MAX_UNUSED_IDS  # unused ids allowed: max(distinct, MAX_UNUSED_IDS)
    with pytest.warns(UserWarning, match=f'{MAX_UNUSED_IDS:,} of the {limit:,} users'):
        check_id_span('/raw', 'user', limit, used, 'the largest user id')
    with pytest.raises(DatasetFormatError) as err:
        check_id_span('/raw', 'user', limit + 1, np.array([0, 1, limit]), 'the largest user id')
    assert str(err.value) == (
        f'/raw [user ids]: the largest user id is {limit:,}, which makes {limit + 1:,} users but '
        f'only 3 distinct user ids appear in the splits ({limit - 2:,} users would have no '
        f'interaction and would still get an embedding). Fix: remap the user ids to 0..2 (e.g. '
        f'ids = np.unique(ids, return_inverse=True)[1], the same mapping in every split and '
        f'feature file) or remove the stray id')
    with pytest.raises(DatasetFormatError) as err:
        check_id_span('/raw', 'item', 10 ** 6, used, 'trnMat.pkl', declared_by='matrix')
    assert str(err.value).startswith('/raw [item ids]: trnMat.pkl declares 1,000,000 items but '
                                     'only 3 distinct item ids')
    assert str(err.value).endswith('or remove the stray id; save the matrices with shape '
                                   '(num_users, num_items) of the ids actually used')
    # feature rows exist whatever the splits use: any number of them only warns
    with pytest.warns(UserWarning) as rec:
        assert check_id_span('/raw', 'item', 10 ** 6, used, 'the rows of image_feat.npy',
                             declared_by='features') == 10 ** 6 - 3
    assert str(rec[0].message).endswith('they are kept as items without interactions (their '
                                        'feature rows are loaded and they are ranked at '
                                        'evaluation)')


def test_duplicates_and_overlaps_are_counted_and_reported_never_dropped():
    import warnings

    import numpy as np

    from mmssl_pyg.data.validation import (
        count_duplicates,
        count_overlap,
        pair_keys,
        report_duplicates_and_overlaps,
    )
    assert pair_keys(np.array([0, 2]), np.array([3, 1]), 10).tolist() == [3, 21]
    assert count_duplicates(np.array([5, 5, 5, 1])) == 2
    assert count_overlap(np.array([1, 2, 3]), np.array([3, 4, 1])) == 2
    pairs = {'train': (np.array([0, 0, 0, 1]), np.array([1, 1, 2, 0])),
             'val': (np.array([0, 1]), np.array([2, 1])),
             'test': (np.array([1]), np.array([0]))}
    files = {'train': 'train.json', 'val': 'val.json', 'test': 'test.json'}
    with pytest.warns(UserWarning) as rec:
        counts = report_duplicates_and_overlaps(pairs, 3, files)
    assert counts == {'duplicates_train': 1, 'duplicates_val': 0, 'duplicates_test': 0,
                      'overlap_train_val': 1, 'overlap_train_test': 1, 'overlap_val_test': 0}
    assert [str(w.message) for w in rec] == [
        'train.json: 1 duplicate (user, item) pair(s) among 4 in the train split; they are kept '
        '(deduplicate the raw file if unintended)',
        'train.json and val.json: 1 (user, item) pair(s) appear in both the train and the val '
        'split (2 distinct val pairs); they are kept, but an evaluator that excludes train '
        'items can never retrieve them',
        'train.json and test.json: 1 (user, item) pair(s) appear in both the train and the test '
        'split (1 distinct test pairs); they are kept, but an evaluator that excludes train '
        'items can never retrieve them']
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert report_duplicates_and_overlaps({'train': pairs['val']}, 3, files) == {
            'duplicates_train': 0}  # a split not given is not compared


@pytest.mark.skipif(hasattr(validation, 'x_report_duplicates_and_overlaps__mutmut_orig'),
                    reason="mutmut's trampolines add stack frames between the caller and "
                    'the warning, so stacklevel is checked in the plain suite only')
def test_duplicate_warnings_point_at_the_callers_line():
    import numpy as np
    pairs = {'train': (np.array([0, 0]), np.array([1, 1]))}
    with pytest.warns(UserWarning) as rec:
        validation.report_duplicates_and_overlaps(pairs, 3, {'train': 'train.json'})
    assert rec[0].filename == __file__  # the default stacklevel 2


def test_pair_keys_are_int64_and_a_missing_val_split_still_compares_train_with_test():
    import numpy as np

    from mmssl_pyg.data.validation import pair_keys, report_duplicates_and_overlaps
    keys = pair_keys(np.array([70000], dtype=np.int32), np.array([5], dtype=np.int32), 70000)
    assert keys.dtype == np.int64 and keys.tolist() == [70000 * 70000 + 5]  # beyond int32
    pairs = {'train': (np.array([0]), np.array([1])), 'test': (np.array([0]), np.array([1]))}
    with pytest.warns(UserWarning, match='train.json and test.json: 1 '):
        counts = report_duplicates_and_overlaps(
            pairs, 3, {'train': 'train.json', 'test': 'test.json'})
    assert counts == {'duplicates_train': 0, 'duplicates_test': 0, 'overlap_train_test': 1}


def test_a_declared_count_without_any_used_id_names_no_largest_id():
    import numpy as np

    from mmssl_pyg.data.validation import check_id_span
    with pytest.raises(DatasetFormatError, match=r'the largest item id is -1, which makes '
                       r'2,000 items but only 0 distinct'):
        check_id_span('/raw', 'item', 2000, np.array([], dtype=np.int64), 'the largest item id')


@pytest.mark.skipif(hasattr(validation, 'x_check_id_span__mutmut_orig'),
                    reason="mutmut's trampolines add stack frames between the caller and "
                    'the warning, so stacklevel is checked in the plain suite only')
def test_unused_id_warning_points_at_the_readers_caller():
    import inspect

    import numpy as np

    def reader():  # check_id_span is called by a reader; the warning names the reader's caller
        return validation.check_id_span('/raw', 'item', 5, np.array([0, 1]), 'x')

    with pytest.warns(UserWarning) as rec:
        line = inspect.currentframe().f_lineno + 1
        reader()
    assert (rec[0].filename, rec[0].lineno) == (__file__, line)
