"""The dataset builder (mmssl_pyg.data.builder), its encoders and the MovieLens-100K recipe.

Expected counts are worked out by hand in the comments; the encoders used here are small
deterministic functions, except in the one test that loads the real all-MiniLM-L6-v2 (skipped
when the `features` extra is not installed)."""
from __future__ import annotations

import numpy as np

from mmssl_pyg.data import load_dataset
from mmssl_pyg.data.recipes import build_movielens_100k, ml100k_item_text
from mmssl_pyg.testing import CountingEncoder, _write_csv


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
