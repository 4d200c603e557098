"""The dataset builder (mmssl_pyg.data.builder), its encoders and the MovieLens-100K recipe.

Expected counts are worked out by hand in the comments; the encoders used here are small
deterministic functions, except in the one test that loads the real all-MiniLM-L6-v2 (skipped
when the `features` extra is not installed)."""
from __future__ import annotations

import numpy as np
import pytest

from mmssl_pyg.data.builder import build_dataset
from mmssl_pyg.data.table import (
    Table,
    _ids,
    _natural_order,
    _numbers,
    _timestamps,
    heldout_counts,
    kcore_filter,
    read_table,
)
from mmssl_pyg.data.validation import DatasetFormatError
from mmssl_pyg.testing import _read


def test_split_sizes_per_user_follow_the_rounding_rule(tmp_path):
    # user k has n = k + 1 distinct items (n = 1..20); at 8:1:1 each user holds out
    # round-half-up(n / 10) = (n + 5) // 10 for val and for test: 1 for n = 5..14 (10 users),
    # 2 for n = 15..20 (6 users) -> 22 val, 22 test, 210 - 44 = 166 train; n = 1..4 hold none.
    users = [str(k) for k in range(20) for _ in range(k + 1)]
    items = [f'item{j}' for k in range(20) for j in range(k + 1)]
    res = build_dataset({'user_id': users, 'item_id': items}, tmp_path / 'ds', progress=False)
    assert (res.stats['train'], res.stats['val'], res.stats['test']) == (166, 22, 22)
    assert res.counts['users_train_only'] == 4
    val = _read(tmp_path / 'ds', 'val.json')
    id_map = _read(tmp_path / 'ds', 'id_map.json')
    assert id_map['users']['9'] == 9 and id_map['users']['10'] == 10  # numeric order
    for orig, idx in id_map['users'].items():
        n = int(orig) + 1
        assert len(val.get(str(idx), [])) == (n + 5) // 10
    # the same counts from the library function
    v, t = heldout_counts(np.arange(1, 21), 0.1, 0.1)
    assert v.tolist() == t.tolist() == [(n + 5) // 10 for n in range(1, 21)]


def test_kcore_filter_matches_a_hand_example():
    # codes of the 7 positive pairs of ROWS (deduplicated): A0 B1 C2 D3, i1=0 i2=1 i3=2 i5=3
    users = np.array([0, 0, 0, 1, 1, 1, 2, 2, 3])
    items = np.array([0, 1, 2, 0, 1, 2, 0, 3, 3])
    assert kcore_filter(users, items, 2).tolist() == [True] * 6 + [False] * 3
    assert kcore_filter(users, items, 1).all()
    assert not kcore_filter(users, items, 4).any()


def test_in_memory_table_with_missing_ids(tmp_path):
    table = Table.from_columns({'user_id': ['a', None, float('nan')], 'item_id': [1, 2, 3]},
                               source='my frame')
    assert table.columns['user_id'] == ['a', '', ''] and table.columns['item_id'][0] == '1'
    with pytest.raises(DatasetFormatError, match=r'my frame \[column "user_id"\]: 2 empty '
                       r'id\(s\) \(first at row 1\)'):
        build_dataset(table, tmp_path / 'ds', progress=False)


def test_table_from_columns_converts_every_value_to_text():
    table = Table.from_columns({'user_id': ['a', None, float('nan'), 2.5, 3]})
    # None and NaN are missing (''); any other value is str(): 2.5 -> '2.5', 3 -> '3'
    assert table.columns == {'user_id': ['a', '', '', '2.5', '3']}
    assert (table.source, table.kind) == ('<table>', 'memory')


def test_a_bad_rating_names_the_column_the_row_and_the_fix(tmp_path):
    table = {'user_id': ['a', 'b'], 'item_id': ['x', 'y'], 'rating': ['4', 'five']}
    with pytest.raises(DatasetFormatError) as err:
        build_dataset(table, tmp_path / 'ds', rating_col='rating', progress=False)
    assert (err.value.field, err.value.problem, err.value.fix) == (
        'column "rating"', "rating 'five' is not a number at row 1",
        'write every rating as a number (or name the right column with --rating-col)')


@pytest.mark.parametrize('n, shown', [
    (5, "'i0', 'i1', 'i2', 'i3', 'i4'"),
    (6, "'i0', 'i1', 'i2', 'i3', 'i4', ... (6 in all)")])
def test_missing_items_are_listed_five_at_most(tmp_path, n, shown):
    # n interacted items that the item table lacks: the first five are named, then the count
    items = [f'i{k}' for k in range(n)]
    table = {'user_id': ['a'] * n, 'item_id': items}
    with pytest.raises(DatasetFormatError) as err:
        build_dataset(table, tmp_path / 'ds', items={'item_id': ['other'], 'title': ['t']},
                      item_id_col='item_id', text_cols=['title'], progress=False)
    assert err.value.problem.endswith(f': {shown}')


def _parquet(tmp_path, columns: dict):
    pa = pytest.importorskip('pyarrow')
    pq = pytest.importorskip('pyarrow.parquet')
    path = tmp_path / 'inter.parquet'
    pq.write_table(pa.table(columns), path)
    return path


def test_parquet_table_reads_the_wanted_columns_as_text(tmp_path):
    path = _parquet(tmp_path, {'user': ['a', None, 'c'], 'item': [1, 2, 3],
                               'score': [0.5, float('nan'), 2.0]})
    table = read_table(path, ['item', 'score', 'absent'])
    assert table.columns == {'item': ['1', '2', '3'], 'score': ['0.5', '', '2.0']}
    assert (table.source, table.kind, table.header) == (str(path), 'parquet',
                                                        ['user', 'item', 'score'])
    assert table.where(0) == 'row 0'
    assert read_table(path).columns['user'] == ['a', '', 'c']
    with pytest.raises(DatasetFormatError) as err:
        table.column('absent', '--item-col')
    assert err.value.problem == "no such column; the columns are 'user', 'item', 'score'"


def test_parquet_errors_say_what_to_do(tmp_path, monkeypatch):
    import sys

    pytest.importorskip('pyarrow.parquet')
    path = tmp_path / 'broken.parquet'
    path.write_bytes(b'not parquet')
    with pytest.raises(DatasetFormatError) as err:
        read_table(path)
    assert (err.value.path, err.value.field) == (str(path), 'format')
    assert err.value.problem.startswith('not a readable Parquet file (')
    assert err.value.fix == ('write the table with pandas.DataFrame.to_parquet or '
                             'pyarrow.parquet.write_table')
    monkeypatch.setitem(sys.modules, 'pyarrow.parquet', None)  # as if pyarrow were missing
    with pytest.raises(ImportError) as err:
        read_table(path)
    assert str(err.value) == (f"reading {path} needs pyarrow. Fix: pip install -e '.[parquet]' "
                              '(or pip install pyarrow), or save the table as CSV')


def test_kcore_filter_removes_in_rounds_and_keeps_an_empty_input_empty():
    # k = 2: i2 has one pair (u2-i2), so it goes in round 1; u2 is left with one pair (u2-i1),
    # which goes in round 2; then every user and item has 2 pairs
    users = np.array([0, 0, 1, 1, 2, 2])
    items = np.array([0, 1, 0, 1, 1, 2])
    assert kcore_filter(users, items, 2).tolist() == [True] * 4 + [False] * 2
    empty = np.array([], dtype=np.int64)
    assert kcore_filter(empty, empty, 2).tolist() == []


def test_read_table_messages_and_the_wanted_columns(tmp_path):
    path = tmp_path / 'inter.csv'
    with pytest.raises(DatasetFormatError) as err:
        read_table(path)
    assert (err.value.path, err.value.field, err.value.problem, err.value.fix) == (
        str(path), 'file', 'not found', 'give the path of the table file')
    path.mkdir()
    with pytest.raises(DatasetFormatError) as err:
        read_table(path)
    assert (err.value.path, err.value.problem) == (str(path), 'not a file')
    path.rmdir()
    path.write_text('a,b,c\n1,2,3\n')
    # empty names are dropped and repeated ones read once; every column stays in the header
    table = read_table(path, ['c', '', 'a', 'c'])
    assert table.columns == {'a': ['1'], 'c': ['3']} and table.header == ['a', 'b', 'c']
    assert read_table(path).columns == {'a': ['1'], 'b': ['2'], 'c': ['3']}


def test_number_and_timestamp_errors_name_the_column_the_row_the_value_and_the_fix():
    number_fix = 'write every rating as a number (or name the right column with --rating-col)'
    time_fix = ('write every timestamp as a number (e.g. Unix seconds) or as an ISO-8601 '
                'date-time such as 2024-01-31T12:00:00, one format for the whole column')

    def error(fn, values, *args):
        with pytest.raises(DatasetFormatError) as err:
            fn(Table({'x': values}, 'f.csv', 'csv'), 'x', *args)
        assert (err.value.path, err.value.field) == ('f.csv', 'column "x"')
        return err.value.problem, err.value.fix

    assert error(_numbers, ['1', 'nan'], '--rating-col', 'rating') == (
        "rating 'nan' is not finite at line 3", number_fix)
    assert error(_numbers, ['1', 'inf', 'x'], '--rating-col', 'rating') == (
        "rating 'x' is not a number at line 4", number_fix)
    # a non-finite number is reported as such, not as a mix of formats
    assert error(_timestamps, ['1', 'inf'], '--time-col') == (
        "timestamp 'inf' is not finite at line 3",
        'write every timestamp as a number (or name the right column with --time-col)')
    assert error(_timestamps, ['2024-01-31', 'soon'], '--time-col') == (
        "timestamp 'soon' is neither a number nor an ISO-8601 date-time at line 3", time_fix)
    assert error(_timestamps, ['5', '2024-01-31', '7'], '--time-col') == (
        '2 timestamp(s) are numbers and the others date-times', time_fix)
    with pytest.raises(DatasetFormatError) as err:
        _timestamps(Table({'x': ['1']}, 'f.csv', 'csv'), 'ts', '--time-col')
    assert err.value.fix == 'name the right column with --time-col'
    # date-times become seconds since 1970 (2024-01-31T12:00:00 = 1706702400 s)
    stamps = _timestamps(Table({'x': ['2024-01-31T12:00:00', ' 1970-01-01 ']}), 'x', '-')
    assert stamps.dtype == np.float64 and stamps.tolist() == [1706702400.0, 0.0]


def test_read_table_csv_details(tmp_path):
    # a byte-order mark and spaces around header names are dropped; blank lines are skipped
    path = tmp_path / 'inter.csv'
    path.write_text('\ufeffuser , item\n\nu1,i1\n\nu2,i2\n', encoding='utf-8')
    table = read_table(path)
    assert table.columns == {'user': ['u1', 'u2'], 'item': ['i1', 'i2']}
    assert (table.kind, table.where(0)) == ('csv', 'line 2')
    # the separator follows the suffix (any case): a tab for .tsv / .tab, else a comma
    for name in ('inter.tsv', 'inter.TAB'):
        (tmp_path / name).write_text('user\titem\nu1\ti1\n')
        assert read_table(tmp_path / name).columns == {'user': ['u1'], 'item': ['i1']}
    (tmp_path / 'inter.txt').write_text('user;item\nu1;i1\n')
    assert read_table(tmp_path / 'inter.txt', sep=';').columns == {'user': ['u1'],
                                                                    'item': ['i1']}
    assert list(read_table(tmp_path / 'inter.txt').columns) == ['user;item']


def _csv_error(path, text, **kwargs):
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(DatasetFormatError) as err:
        read_table(path, **kwargs)
    assert err.value.path == str(path)
    return err.value.field, err.value.problem, err.value.fix


def test_read_table_csv_errors_in_full(tmp_path):
    path = tmp_path / 'inter.csv'
    assert _csv_error(path, '') == ('header', 'the file is empty', 'write a header line with '
                                    'the column names, then one line per row')
    assert _csv_error(path, 'a,b,a,b,c\n1,2,3,4,5\n') == (
        'header', "column name(s) ['a', 'b'] repeated", 'give every column a distinct name')
    assert _csv_error(path, 'a,b,c\n1,2,3\n4,5\n') == (
        'line 3', '2 fields, the header has 3',
        "quote fields that contain the separator (','), or pass the right --sep / sep=")
    field, problem, fix = _csv_error(path, b'a,b\n\xff,1\n')
    assert (field, fix) == ('encoding', 're-save the file as UTF-8')
    assert problem.startswith("not UTF-8 text ('utf-8' codec can't decode byte 0xff")
    field, problem, fix = _csv_error(path, 'a,b\n' + 'x' * 200_000 + ',1\n')
    assert (field, fix) == ('format', 'write one header line and one line per row')
    assert problem == 'not a readable delimited file (field larger than field limit (131072))'


def test_a_bad_separator_is_refused_with_the_fix(tmp_path):
    path = tmp_path / 'inter.csv'
    path.write_text('a,b\n1,2\n')
    for sep in ('', ';;', '"', '\n', '\r', 1):
        with pytest.raises(ValueError) as err:
            read_table(path, sep=sep)
        assert str(err.value) == (
            f'--sep / sep={sep!r} for {path}: the field separator must be one character other '
            "than a quote or a line break. Fix: e.g. --sep , or --sep ';' (a tab: --sep $'\\t')")


def test_parquet_suffix_in_any_case(tmp_path):
    path = _parquet(tmp_path, {'user': ['a'], 'item': ['b']})
    for name in ('inter.PQ', 'inter.Parquet'):
        path.rename(tmp_path / name)
        assert read_table(tmp_path / name).kind == 'parquet'
        path = tmp_path / name


def test_natural_order_sorts_integers_as_numbers_and_the_rest_as_text():

    def order(ids):
        return [ids[j] for j in _natural_order(np.array(ids))]

    assert order(['10', '9', '-200']) == ['-200', '9', '10']
    assert order(['b', '10', '9']) == ['10', '9', 'b']
    # beyond +-2**62 integers are compared as text (they may not fit in 64 bits)
    big, small = str(2**62), str(-2**62)
    assert order([big, '9']) == [big, '9']
    assert order(['9', small, '10']) == [small, '10', '9']
    assert order(['9', str(2**62 - 1)]) == ['9', str(2**62 - 1)]
    assert order([str(-2**62 + 1), '9']) == [str(-2**62 + 1), '9']
    assert order(['9', '1' + '0' * 30]) == ['1' + '0' * 30, '9']
    # compared exactly, not as floats (2**60 and 2**60 + 1 are one float64)
    assert order([str(2**60 + 1), str(2**60)]) == [str(2**60), str(2**60 + 1)]


def test_columns_of_different_lengths_are_refused():
    with pytest.raises(ValueError) as err:
        Table({'a': ['1', '2'], 'b': ['1']}, 'my frame')
    assert str(err.value) == "my frame: columns have different lengths {'a': 2, 'b': 1}"


def test_a_missing_column_lists_the_columns_and_hints_at_the_separator():
    def fix_and_problem(table):
        with pytest.raises(DatasetFormatError) as err:
            table.column('user_id', '--user-col')
        assert err.value.fix == 'name the right column with --user-col'
        return err.value.problem

    # one column in a CSV file: most likely the wrong separator
    assert fix_and_problem(Table({'user_id;item_id': ['1;2']}, 'f.csv', 'csv')) == (
        "no such column; the columns are 'user_id;item_id' (one column only: is the separator "
        'right? pass --sep / sep=)')
    assert fix_and_problem(Table({'a': ['1']}, 'f.pq', 'parquet')) == (
        "no such column; the columns are 'a'")
    assert fix_and_problem(Table({'a': ['1'], 'b': ['2']}, 'f.csv', 'csv')) == (
        "no such column; the columns are 'a', 'b'")
    assert fix_and_problem(Table({})) == 'no such column; the columns are none'
    # the file's header is listed, also the columns that were not read
    assert fix_and_problem(Table({'a': ['1']}, 'f.csv', 'csv', ['a', 'b'])) == (
        "no such column; the columns are 'a', 'b'")


def test_the_builder_reads_a_text_table_with_the_given_separator(tmp_path):
    (tmp_path / 'inter.txt').write_text('user_id;item_id;extra\n' + ''.join(
        f'u{k};i{j};x\n' for k in range(3) for j in range(10)))
    res = build_dataset(tmp_path / 'inter.txt', tmp_path / 'ds', sep=';', progress=False)
    # 3 users x 10 items; each user holds out round(10 / 10) = 1 for val and 1 for test
    assert (res.stats['train'], res.stats['val'], res.stats['test']) == (24, 3, 3)


def test_ids_must_be_given_and_written_one_way():

    def problem_and_fix(values):
        with pytest.raises(DatasetFormatError) as err:
            _ids(Table({'x': values}, 'f.csv', 'csv'), 'x', '--user-col')
        assert (err.value.path, err.value.field) == ('f.csv', 'column "x"')
        return err.value.problem, err.value.fix

    assert problem_and_fix(['a', ' ', 'b', '']) == (
        '2 empty id(s) (first at line 3)', 'give every row an id, or remove those rows')
    alias_fix = 'write each id one way (e.g. all as integers), or make them non-numeric'
    # ids are compared as sorted texts: '07' comes before '7', so '7' is the second spelling;
    # '-a' is not a number and '-inf' not a finite one, and both sort first
    assert problem_and_fix(['-a', '7', '-inf', 'b', '7', '07']) == (
        "ids '07' and '7' are two spellings of the number 7 (first '7' at line 3); they would "
        'become two different ids', alias_fix)
    assert problem_and_fix(['1.0', 'x', '1']) == (
        "ids '1' and '1.0' are two spellings of the number 1 (first '1.0' at line 2); they "
        'would become two different ids', alias_fix)
    # infinities and NaN in their spellings are ids like any text
    ids = _ids(Table({'x': ['inf', 'Infinity', '-inf', 'nan', 'NaN', ' 3 ']}), 'x', '-')
    assert ids.tolist() == ['inf', 'Infinity', '-inf', 'nan', 'NaN', '3']


def test_heldout_counts_leave_every_user_one_training_interaction():
    # half and half: round(n / 2) each, halves up; test is capped at n - 1 first, then val at
    # what is left minus one: n = 0 -> (0, 0); 1 -> (0, 0); 2 -> test 1, val 0;
    # 3 -> test 2, val 0; 4 -> test 2, val 1; 5 -> test 3 (2.5 up), val 1
    val, test = heldout_counts(np.arange(6), 0.5, 0.5)
    assert test.tolist() == [0, 0, 1, 2, 2, 3] and val.tolist() == [0, 0, 0, 0, 1, 1]
    assert val.dtype == test.dtype == np.int64


def test_read_table_keeps_line_breaks_inside_quoted_fields_and_takes_any_separator(tmp_path):
    path = tmp_path / 'items.csv'
    path.write_bytes(b'item,title\r\ni1,"two\r\nlines"\r\n')
    assert read_table(path).columns == {'item': ['i1'], 'title': ['two\r\nlines']}
    path.write_text('aXb\n1X2\n')
    assert read_table(path, sep='X').columns == {'a': ['1'], 'b': ['2']}
    with pytest.raises(DatasetFormatError) as err:
        _numbers(read_table(path, sep='X'), 'rating', '--rating-col', 'rating')
    assert err.value.fix == 'name the right column with --rating-col'
