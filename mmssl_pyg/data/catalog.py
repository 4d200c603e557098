"""The bundled and published datasets: their provenance (:class:`DatasetInfo`), one
:class:`~mmssl_pyg.data.dataset.MMSSLDataset` subclass each, the registry of names and
aliases (:data:`DATASETS`), :func:`load_dataset` and the text of ``mmssl-pyg datasets``
(:func:`datasets_command`)."""
from __future__ import annotations

import os.path as osp
from collections.abc import Sequence
from os import PathLike
from pathlib import Path

from .dataset import DatasetInfo, MMSSLDataset, default_root
from .folder import available_modalities, raw_files_missing, resolve_raw_dir
from .stats import format_stats

# --------------------------------------------------------------------------------------------
# Dataset descriptions (the paper's Table 1 and where the files come from)
# --------------------------------------------------------------------------------------------

_MMSSL_DRIVE = ('MMSSL release, https://github.com/HKUDS/MMSSL: README "Datasets" -> Google '
                'Drive https://drive.google.com/drive/folders/1AB1RsnU-ETmubJgWLpJrXd8TjaK_eTp0 '
                '(train/val/test.json, train_mat, *_feat.npy per dataset)')
_LATTICE = ('LATTICE release, https://github.com/CRIPAC-DIG/LATTICE: processed data on Google '
            'Drive https://drive.google.com/drive/folders/1sFg9W2wCexWahjqtN6MVc4f4dMj5hyFp, or '
            'build it with data/build_data.py from the Amazon 2014 5-core reviews')
_DIFFMM = ('DiffMM release, https://github.com/HKUDS/DiffMM: Datasets/{folder}/ (trnMat.pkl, '
           'valMat.pkl, tstMat.pkl, *_feat.npy{extra})')


TIKTOK_INFO = DatasetInfo(
    'tiktok', 'TikTok', 9319, 6710, 59541, (('image', 128), ('audio', 128)),
    ('bundled with this repository in datasets/tiktok/raw (from HKUDS/DiffMM @ fae20e6)',
     _DIFFMM.format(folder='tiktok', extra=''), _MMSSL_DRIVE),
    'The bundled copy has 9,308 users (the paper reports 9,319). The paper\'s 768-d text '
    'features are not in it; a text_feat.npy placed in raw/ is picked up.')
TIKTOK_MINI_INFO = DatasetInfo(
    'tiktok-mini', 'TikTok-mini', 1000, 2872, 6227, (('image', 128), ('audio', 128)),
    ('bundled with this repository in datasets/tiktok-mini/raw (1,000 TikTok users, seed 0)',),
    'Not in the paper: a 1,000-user sample of TikTok for quick runs and tests.')
AMAZON_BABY_INFO = DatasetInfo(
    'amazon-baby', 'Amazon-Baby', 19445, 7050, 139110, (('image', 4096), ('text', 1024)),
    (_MMSSL_DRIVE, _LATTICE,
     _DIFFMM.format(folder='baby', extra='; unzip image_feat.npy.zip')),
    'The interactions alone are bundled in datasets/amazon-baby-interactions '
    "(load_dataset('amazon-baby-interactions'), no modality).")
AMAZON_SPORTS_INFO = DatasetInfo(
    'amazon-sports', 'Amazon-Sports', 35598, 18357, 256308, (('image', 4096), ('text', 1024)),
    (_MMSSL_DRIVE, _LATTICE,
     _DIFFMM.format(folder='sports', extra='; sports is on the Google Drive link of '
                    'Datasets/README.md')),
    'The interactions alone are bundled in datasets/amazon-sports-interactions '
    "(load_dataset('amazon-sports-interactions'), no modality).")
ALLRECIPES_INFO = DatasetInfo(
    'allrecipes', 'Allrecipes', 19805, 10067, 58922, (('image', 2048), ('text', 20)),
    (_MMSSL_DRIVE,),
    'The text modality is 20 sampled ingredients per recipe.')


MOVIELENS_100K_INFO = DatasetInfo(
    'movielens-100k', 'MovieLens-100K', 938, 1008, 54413, (('text', 384),),
    ('built on your machine from the copy inside the recbole wheel: make movielens-100k, or '
     "pip install -e '.[features]' && pip install --no-deps recbole==1.2.1 && "
     'mmssl-pyg build-dataset --recipe movielens-100k (see mmssl_pyg/data/recipes.py)',),
    'Not in the paper. Ratings >= 4 as positives, 5-core, per-user random 8:1:1 split (seed 0), '
    'text = title, year and genres encoded with all-MiniLM-L6-v2. The MovieLens terms forbid '
    'redistribution: the data is never committed.')


class TikTok(MMSSLDataset):
    r"""The TikTok micro-video dataset of the `"Multi-Modal Self-Supervised Learning for
    Recommendation" <https://arxiv.org/abs/2302.10632>`_ (MMSSL) paper, bundled with this
    repository (9,308 users, 6,710 items, 59,541 / 3,051 / 6,130 train / val / test
    interactions; 128-d ``image`` and 128-d ``audio`` features, stored as ``float16``).

    The paper's 768-d text features are not in the bundled copy; a ``text_feat.npy`` placed
    in ``raw/`` is loaded as a third modality. Arguments as :class:`MMSSLDataset`; ``root``
    defaults to the repository's ``datasets/tiktok``.

    Example:
        >>> dataset = TikTok(root='datasets/tiktok')
        >>> dataset.stats()['train']
        59541
    """
    info = TIKTOK_INFO


class TikTokMini(MMSSLDataset):
    r"""A 1,000-user sample of :class:`TikTok` (2,872 items; 6,227 / 336 / 664 train / val /
    test interactions; ``image`` and ``audio`` features) for quick runs. ``raw/id_map.json``
    maps its ids back to TikTok's. Arguments as :class:`MMSSLDataset`; ``root`` defaults to
    the repository's ``datasets/tiktok-mini``.

    Example:
        >>> dataset = TikTokMini()
        >>> dataset.num_users, dataset.num_items
        (1000, 2872)
    """
    info = TIKTOK_MINI_INFO


class AmazonBaby(MMSSLDataset):
    r"""The Amazon-Baby dataset of the MMSSL paper (19,445 users, 7,050 items, 139,110
    interactions; 4096-d ``image`` and 1024-d ``text`` features).

    Its features cannot be downloaded here: place the raw files in ``root/raw`` (the error
    raised when they are missing lists each file, its shape, and the MMSSL, LATTICE and
    DiffMM releases that provide it). The interactions alone are bundled:
    ``AmazonBaby('datasets/amazon-baby-interactions', modalities=[])`` or
    ``load_dataset('amazon-baby-interactions')``. Arguments as :class:`MMSSLDataset`.

    Example:
        >>> dataset = AmazonBaby('datasets/amazon-baby-interactions', modalities=[])
        >>> dataset.stats()['users']
        19445
    """
    info = AMAZON_BABY_INFO


class AmazonSports(MMSSLDataset):
    r"""The Amazon-Sports dataset of the MMSSL paper (35,598 users, 18,357 items, 256,308
    interactions; 4096-d ``image`` and 1024-d ``text`` features). As :class:`AmazonBaby`; the
    interactions alone are bundled in ``datasets/amazon-sports-interactions``.

    Example:
        >>> dataset = AmazonSports('datasets/amazon-sports-interactions', modalities=[])
        >>> dataset.num_items
        18357
    """
    info = AMAZON_SPORTS_INFO


class Allrecipes(MMSSLDataset):
    r"""The Allrecipes dataset of the MMSSL paper (19,805 users, 10,067 items, 58,922
    interactions; 2048-d ``image`` features and 20-d ``text`` (ingredient) features). Not
    bundled and not downloadable here: place the raw files of the MMSSL release in
    ``root/raw``. Arguments as :class:`MMSSLDataset`.

    Example:
        >>> dataset = Allrecipes(root='data/allrecipes')  # raw files from the MMSSL release
    """
    info = ALLRECIPES_INFO


class MovieLens100K(MMSSLDataset):
    r"""MovieLens-100K with a ``text`` modality (384-d all-MiniLM-L6-v2 embeddings of each
    movie's title, year and genres): 938 users, 1,008 items, 43,421 / 5,496 / 5,496 train /
    val / test interactions (ratings >= 4, 5-core, per-user random 8:1:1 split, seed 0).

    Not bundled (the MovieLens terms forbid redistribution): build it once with
    ``mmssl-pyg build-dataset --recipe movielens-100k`` (see
    :func:`~mmssl_pyg.data.recipes.build_movielens_100k`). Arguments as
    :class:`MMSSLDataset`; ``root`` defaults to the repository's ``datasets/movielens-100k``.

    Example:
        >>> dataset = MovieLens100K()
        >>> dataset.num_users, dataset.num_items
        (938, 1008)
    """
    info = MOVIELENS_100K_INFO

    def _missing_message(self, missing: list[str]) -> str:
        root = Path(self.root)
        output = '' if root.resolve() == default_root(self.name).resolve() else \
            f' --output {root}'
        return (f'MovieLens-100K is not built yet in {root} (missing: {", ".join(missing)}). '
                'It is built on your machine, never downloaded or committed (the MovieLens '
                "terms forbid redistribution). Build it: pip install -e '.[features]' && "
                f'pip install --no-deps recbole==1.2.1 && mmssl-pyg build-dataset --recipe '
                f'movielens-100k{output}  (or, in a checkout, make movielens-100k)')


#: Registry names -> (class, default keyword arguments). The folder is the name.
DATASETS: dict[str, tuple[type[MMSSLDataset], dict]] = {
    'tiktok': (TikTok, {}),
    'tiktok-mini': (TikTokMini, {}),
    'amazon-baby': (AmazonBaby, {}),
    'amazon-sports': (AmazonSports, {}),
    'allrecipes': (Allrecipes, {}),
    'movielens-100k': (MovieLens100K, {}),
    'amazon-baby-interactions': (AmazonBaby, {'modalities': [],
                                              'name': 'amazon-baby-interactions'}),
    'amazon-sports-interactions': (AmazonSports, {'modalities': [],
                                                  'name': 'amazon-sports-interactions'}),
}


def _registry_key(name: str) -> str:
    return name.strip().lower().replace('_', '-')


def _is_path(name: str) -> bool:
    # every caller also asks whether the name is a registry key, so a name that is neither
    # (e.g. '.', '~' or 'my-copy') is a folder already; this only tells 'x/tiktok' from 'tiktok'
    return osp.sep in name or '/' in name


def is_dataset_folder(name: str) -> bool:
    """Whether a dataset argument names a folder rather than a registry name (or alias)."""
    return _is_path(name) or _registry_key(name) not in DATASETS


def load_dataset(name: str, root: str | PathLike | None = None,
                 modalities: Sequence[str] | None = None, force_reload: bool = False,
                 **kwargs) -> MMSSLDataset:
    r"""Load a dataset by registry name or folder path.

    Args:
        name (str): one of ``'tiktok'``, ``'tiktok-mini'``, ``'amazon-baby'``,
            ``'amazon-sports'``, ``'allrecipes'``, ``'amazon-baby-interactions'``,
            ``'amazon-sports-interactions'``, ``'movielens-100k'`` (case and ``_``/``-`` do
            not matter), or the path to a folder in the MMSSL format (loaded with
            :class:`MMSSLDataset`).
        root (str, optional): the dataset's root folder. Defaults to the repository's
            ``datasets/<name>`` (see :func:`default_root`). Ignored when :obj:`name` is a
            path. (default: :obj:`None`)
        modalities (list[str], optional): modalities to load (see :class:`MMSSLDataset`);
            the ``*-interactions`` names default to ``[]``. (default: :obj:`None`)
        force_reload (bool, optional): whether to re-process. (default: :obj:`False`)
        **kwargs: further arguments of :class:`MMSSLDataset` (``transform``,
            ``pre_transform``, ``raw_format``, ``log``, ``name``).

    Raises:
        ValueError: when :obj:`name` is neither a known name nor a folder (the message lists
            the known names).

    Example:
        >>> dataset = load_dataset('tiktok-mini', modalities=['image'])
        >>> graph = RecGraph.from_hetero(dataset[0])
    """
    key = _registry_key(name)
    if key in DATASETS and not _is_path(name):
        cls, defaults = DATASETS[key]
        args = {**defaults, **kwargs}
        if modalities is not None:
            args['modalities'] = modalities
        return cls(root=root if root is not None else default_root(key),
                   force_reload=force_reload, **args)
    path = Path(name).expanduser()
    if path.is_dir():
        return MMSSLDataset(path, modalities=modalities, force_reload=force_reload, **kwargs)
    raise ValueError(f'unknown dataset {name!r}: not a known name and not a folder. Known '
                     f'names: {", ".join(DATASETS)}; or pass the path to a folder holding '
                     'train.json, val.json, test.json and <modality>_feat.npy files')


def datasets_command(names: list[str] | None = None,
                     root: str | PathLike | None = None, force_reload: bool = False) -> str:
    r"""The text of the ``mmssl-pyg datasets`` command.

    Args:
        names (list[str], optional): registry names or folder paths. Empty or :obj:`None`
            lists the known datasets and whether their raw files are present; otherwise the
            datasets are loaded (processed on first use) and their statistics formatted as
            Table 1. (default: :obj:`None`)
        root (str, optional): the folder holding one sub-folder per dataset (like the
            repository's ``datasets/``); :obj:`None` uses :func:`default_root`.
            (default: :obj:`None`)
        force_reload (bool, optional): re-process the named datasets from their raw
            files. (default: :obj:`False`)

    Raises:
        DatasetNotFoundError: when a named dataset's raw files are missing (the message says
            which and where to get them).
        DatasetFormatError: when a raw file is malformed.
    """
    def folder(key: str) -> Path:
        return Path(root) / key if root is not None else default_root(key)

    if names:
        loaded = []
        for n in names:
            key = _registry_key(n)
            known = key in DATASETS and not _is_path(n)
            loaded.append(load_dataset(n, root=folder(key) if known else None,
                                       force_reload=force_reload))
        return format_stats(loaded)

    rows = []
    for key, (cls, defaults) in DATASETS.items():
        declared = defaults.get('modalities')
        if declared is None:
            declared = [m for m, _ in cls.info.modality_dims] if cls.info else []
        path = folder(key)
        missing = raw_files_missing(path, declared)
        found = available_modalities(resolve_raw_dir(path))
        if not missing:
            status = 'present'
        elif not resolve_raw_dir(path).is_dir():
            status = 'missing (no raw folder)'
        else:
            status = f'missing {", ".join(missing)}'
        mods = ', '.join(found) if found else 'none'
        rows.append((key, status, mods, str(path)))
    head = ('name', 'raw files', 'feature files', 'folder')
    widths = [max(len(r[j]) for r in [head, *rows]) for j in range(3)]
    lines = ['  '.join(f'{c:<{w}}' for c, w in zip(r[:3], widths)) + '  ' + r[3]
             for r in [head, *rows]]
    lines.append('')
    lines.append('Statistics: mmssl-pyg datasets NAME [NAME ...] (a folder path works too); '
                 'for a missing dataset this says which files to get and where.')
    return '\n'.join(lines)
