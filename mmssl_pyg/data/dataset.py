r"""PyG :class:`~torch_geometric.data.InMemoryDataset` loaders for MMSSL-format data.

Every dataset builds one :class:`~torch_geometric.data.HeteroData`:

.. code-block:: none

    data['user'].num_nodes                      number of users
    data['item'].num_nodes                      number of items
    data['item'].<modality>_feat                [num_items, d_m] float32, one per modality
    data['user', 'interacts', 'item']
        .edge_index                             [2, E_train] training (user, item) pairs
        .val_edge_index                         [2, E_val]   validation pairs
        .test_edge_index                        [2, E_test]  test pairs
    data['item', 'rev_interacts', 'user']
        .edge_index                             [2, E_train] the training pairs reversed
    data.modalities                             list of modality names, in order ([] if none)
    data.name                                   dataset name ('tiktok', 'amazon-baby', ...)

Pairs are sorted by (user, item); duplicates are kept (and reported). Nothing is dense:
the sparsity in :meth:`MMSSLDataset.stats` is computed from counts.
:meth:`mmssl_pyg.data.graph.RecGraph.from_hetero` turns the object into the view that models
and the trainer take.
"""
from __future__ import annotations

import os
import os.path as osp
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

from torch_geometric.data import HeteroData, InMemoryDataset
from torch_geometric.io import fs

from ..utils.io import clean_stale_tmp
from .cache import (
    ProcessedCacheError,
    changed_files,
    fingerprint_digest,
    load_processed,
    raw_fingerprint,
    save_processed,
)
from .folder import (
    available_modalities,
    detect_raw_format,
    read_mmssl_folder,
    resolve_raw_dir,
)
from .graph import EDGE, ITEM, USER
from .readers import FEATURE_FILE, RAW_FORMATS, modality_from_file
from .stats import dataset_stats
from .validation import DatasetNotFoundError


@dataclass(frozen=True)
class DatasetInfo:
    r"""What a named dataset should contain, from the MMSSL paper's Table 1.

    Attributes:
        name (str): registry name, e.g. ``'amazon-baby'``.
        title (str): name in the paper, e.g. ``'Amazon-Baby'``.
        users, items, interactions (int): Table 1 figures.
        modality_dims (tuple[tuple[str, int], ...]): ``(modality, dim)`` loaded by default.
        sources (tuple[str, ...]): where the raw files can be obtained.
        note (str): anything a user should know about the available copies.
    """
    name: str
    title: str
    users: int
    items: int
    interactions: int
    modality_dims: tuple[tuple[str, int], ...]
    sources: tuple[str, ...]
    note: str = ''


# --------------------------------------------------------------------------------------------
# The datasets
# --------------------------------------------------------------------------------------------

def default_root(folder: str) -> Path:
    r"""Default root of a bundled dataset: the repository's ``datasets/<folder>``.

    The repository's ``datasets/`` folder (found relative to this package) is used when it
    holds ``<folder>`` or when ``./datasets/<folder>`` does not exist; otherwise
    ``./datasets/<folder>`` (for an installed package run from a checkout or data folder).
    """
    repo = Path(__file__).resolve().parents[2] / 'datasets'
    cwd = Path.cwd() / 'datasets'
    for base in (repo, cwd):
        if (base / folder).is_dir():
            return base / folder
    return (repo if repo.is_dir() else cwd) / folder


class MMSSLDataset(InMemoryDataset):
    r"""A multi-modal recommendation dataset in the MMSSL / LATTICE release format.

    The raw folder holds ``train.json``, ``val.json`` and ``test.json`` (a JSON object mapping
    each user id string to its list of item ids) and one ``<modality>_feat.npy`` per
    modality (row :math:`i` = item :math:`i`; ``float16`` is cast to ``float32``). The MMSSL
    ``train_mat`` pickle may replace ``train.json``, and the DiffMM ``trnMat.pkl`` /
    ``valMat.pkl`` / ``tstMat.pkl`` pickled sparse matrices may replace all three JSON files.
    The raw files are read from ``root/raw``, or from ``root`` itself when it holds them
    directly (the layout of the release archives).

    :meth:`process` builds one :class:`~torch_geometric.data.HeteroData` (layout in
    :mod:`mmssl_pyg.data.dataset`): ``user`` and ``item`` nodes, training edges on
    ``('user', 'interacts', 'item')`` and its reverse, ``val_edge_index`` /
    ``test_edge_index`` on the forward edge type, ``data['item'][f'{m}_feat']`` for each
    modality, ``data.modalities`` and ``data.name``. A subset of modalities is read from the
    same raw files; the processed file name (``data_image+audio.pt``,
    ``data_no_features.pt``, ...) records the choice, so several subsets coexist.

    Malformed raw files raise :class:`~mmssl_pyg.data.validation.DatasetFormatError` naming
    the file, field and fix; missing ones raise
    :class:`~mmssl_pyg.data.validation.DatasetNotFoundError` listing every expected file
    (nothing is downloaded).

    Args:
        root (str): root directory; raw files in ``root/raw``, processed ones are written to
            ``root/processed``. Named subclasses default to the repository's
            ``datasets/<name>`` folder. (default: :obj:`None`)
        modalities (list[str], optional): modalities to load, in order. :obj:`None` loads the
            dataset's declared modalities plus every other ``<m>_feat.npy`` in the raw folder;
            ``[]`` loads the interactions only. (default: :obj:`None`)
        name (str, optional): recorded as ``data.name`` (picks presets). Defaults to the
            dataset's registry name, or the folder name for :class:`MMSSLDataset`.
            (default: :obj:`None`)
        raw_format (str, optional): ``'json'``, ``'train_mat'`` or ``'pkl'``; detected from
            the files when :obj:`None` (``train.json`` first). (default: :obj:`None`)
        transform (callable, optional): a function/transform that takes in a
            :class:`~torch_geometric.data.HeteroData` object and returns a transformed
            version, applied on every access. (default: :obj:`None`)
        pre_transform (callable, optional): as :obj:`transform`, applied once before the
            processed file is saved. (default: :obj:`None`)
        force_reload (bool, optional): whether to re-process the dataset.
            (default: :obj:`False`)
        log (bool, optional): whether to print progress while processing.
            (default: :obj:`True`)

    Example:
        >>> from mmssl_pyg.data import MMSSLDataset, RecGraph
        >>> dataset = MMSSLDataset('datasets/tiktok', modalities=['image'])
        >>> data = dataset[0]
        >>> data.modalities, data['item'].image_feat.shape
        (['image'], torch.Size([6710, 128]))
        >>> graph = RecGraph.from_hetero(data)
    """

    #: Table 1 description of a named dataset (``None`` for arbitrary folders).
    info: DatasetInfo | None = None

    def __init__(
        self,
        root: str | PathLike | None = None,
        modalities: Sequence[str] | None = None,
        name: str | None = None,
        raw_format: str | None = None,
        transform: Callable | None = None,
        pre_transform: Callable | None = None,
        force_reload: bool = False,
        log: bool = True,
    ) -> None:
        if root is None:
            if self.info is None:
                raise TypeError('MMSSLDataset needs root=<folder holding raw/ or the raw files>')
            root = default_root(self.info.name)
        if isinstance(modalities, str):
            modalities = [modalities]
        if modalities is not None:
            modalities = list(modalities)
            repeated = sorted({m for m in modalities if modalities.count(m) > 1})
            if repeated:
                raise ValueError(f'modalities lists {repeated} more than once: {modalities}')
        if raw_format is not None and raw_format not in RAW_FORMATS:
            raise ValueError(f'raw_format must be one of {sorted(RAW_FORMATS)}, '
                             f'got {raw_format!r}')
        self._requested_modalities = modalities
        self._modalities: list[str] | None = None
        self._raw_format = raw_format
        root = osp.expanduser(fs.normpath(str(root)))
        self.name = name or (self.info.name if self.info else Path(root).name)
        self._cache: dict | None = None
        super().__init__(root, transform, pre_transform, force_reload=force_reload, log=log)
        if self._cache is None:  # PyG skipped _process (never, while process() is defined)
            self._cache = self._read_cache(self.processed_paths[0])
        self._set_cache(self._cache)
        if getattr(self._data, 'name', None) != self.name:  # same files, another name
            self._data.name = self.name

    # ---- PyG hooks ----------------------------------------------------------------------

    @property
    def raw_dir(self) -> str:
        return str(resolve_raw_dir(self.root))

    @property
    def raw_format(self) -> str:
        """The split layout read: ``'json'``, ``'train_mat'`` or ``'pkl'``."""
        return self._raw_format or detect_raw_format(self.raw_dir)

    @property
    def modalities(self) -> list[str]:
        """The modalities this dataset loads, in order."""
        if self._modalities is None:
            if self._requested_modalities is not None:
                self._modalities = list(self._requested_modalities)
            else:
                declared = [m for m, _ in self.info.modality_dims] if self.info else []
                found = available_modalities(self.raw_dir)
                self._modalities = declared + [m for m in found if m not in declared]
        return list(self._modalities)

    @property
    def raw_file_names(self) -> list[str]:
        return (list(RAW_FORMATS[self.raw_format].values())
                + [FEATURE_FILE.format(m) for m in self.modalities])

    @property
    def processed_file_names(self) -> str:
        tag = '+'.join(self.modalities) or 'no_features'
        fmt = '' if self.raw_format == 'json' else f'{self.raw_format}_'
        return f'data_{fmt}{tag}.pt'

    def _download(self) -> None:
        # PyG's version creates raw/ before calling download(); nothing is ever downloaded
        # here, so a failed load leaves no empty folders behind.
        if not all(osp.isfile(p) for p in self.raw_paths):
            self.download()

    def download(self) -> None:
        missing = [f for f in self.raw_file_names
                   if not osp.isfile(osp.join(self.raw_dir, f))]
        message = self._missing_message(missing)
        raise DatasetNotFoundError(self.raw_dir, message, missing,
                                   self._missing_summary(missing, message))

    def _missing_state(self, name: str) -> str:
        """Why a raw file that is expected counts as missing, when something is there."""
        path = Path(self.raw_dir) / name
        if path.is_dir():
            return ' (a folder, not a file)'
        if path.is_symlink():
            return ' (a broken symbolic link: its target is missing or a loop)'
        return ''

    def _missing_summary(self, missing: list[str], message: str) -> str:
        """The one line the command line prints for missing raw files: what, where, the fix
        (the full list with shapes and sources is the exception's message)."""
        if '\n' not in message:
            return message
        name = self.info.name if self.info is not None else self.root
        subset = ('' if any(modality_from_file(f) is None for f in missing) else
                  ', or load a subset with modalities=[...] (--modalities)')
        names = ', '.join(f + self._missing_state(f) for f in missing)
        return (f'{self.__class__.__name__}: raw files missing in {self.raw_dir}: '
                f'{names}. Fix: place them there{subset}; `mmssl-pyg datasets '
                f'{name}` (or the Python error of load_dataset) lists each expected file, its '
                f'shape and where to get it')

    def _process(self) -> None:
        # Replaces PyG's: that one unpickles processed/pre_transform.pt and pre_filter.pt
        # without weights_only and reuses a processed file whatever the raw files now hold.
        path = self.processed_paths[0]
        clean_stale_tmp(self.processed_dir)
        fingerprint = raw_fingerprint(self.raw_dir, self.raw_file_names)
        if not self.force_reload and osp.exists(path):
            cache = self._read_cache(path)
            reason = self._outdated(cache, fingerprint)
            if reason is None:
                self._cache = cache
                return
            if self.log and 'PYTEST_CURRENT_TEST' not in os.environ:
                print(f'Re-processing {path}: {reason}', file=sys.stderr)
        self._fingerprint = fingerprint
        if self.log and 'PYTEST_CURRENT_TEST' not in os.environ:
            print('Processing...', file=sys.stderr)
        self.process()

    def process(self) -> None:
        fingerprint = getattr(self, '_fingerprint', None) or raw_fingerprint(
            self.raw_dir, self.raw_file_names)
        data = read_mmssl_folder(self.raw_dir, self.modalities, self.name, self.raw_format)
        if self.pre_transform is not None:
            data = self.pre_transform(data)
        path = save_processed(self.processed_paths[0], data.to_dict(), fingerprint,
                              self._cache_key())
        self._cache = load_processed(path)

    def load(self, path: str, data_cls: type = HeteroData) -> None:
        """Load a processed file of this class (``weights_only``; see
        :func:`mmssl_pyg.data.cache.load_processed`)."""
        self._set_cache(self._read_cache(path), path)

    def _read_cache(self, path: str) -> dict | None:
        return load_processed(path)

    def _set_cache(self, cache: dict | None, path: str | None = None) -> None:
        if cache is None:
            raise ProcessedCacheError(path or self.processed_paths[0], 'not a processed cache '
                                      'of this version of mmssl-pyg')
        self._cache = cache
        self._data, self.slices = HeteroData.from_dict(cache['data']), None

    def _cache_key(self) -> dict:
        # the repr without memory addresses: '<function f>', the same in every process
        transform = re.sub(r' at 0x[0-9a-fA-F]+', '', repr(self.pre_transform))
        return {'raw_format': self.raw_format, 'modalities': self.modalities,
                'pre_transform': transform}

    def _outdated(self, cache: dict | None, fingerprint: dict) -> str | None:
        """Why a cache cannot be used (``None`` when it can)."""
        if cache is None:
            return 'written by another version'
        changed = changed_files(cache['fingerprint'], fingerprint)
        if changed:
            return f'raw file(s) changed since it was built: {", ".join(changed)}'
        if cache.get('key') != self._cache_key():
            return 'built with other options (raw_format, modalities or pre_transform)'
        return None

    @property
    def fingerprint(self) -> dict[str, dict]:
        """``{raw file name: {'size', 'mtime_ns', 'sha256'}}`` of the files this data was
        built from (see :mod:`mmssl_pyg.data.cache`)."""
        return dict(self._cache['fingerprint'])

    @property
    def data_digest(self) -> str:
        """One hash of the raw files' names and contents (independent of their folder)."""
        return fingerprint_digest(self._cache['fingerprint'])

    # ---- convenience --------------------------------------------------------------------

    @property
    def num_users(self) -> int:
        return int(self._data[USER].num_nodes)

    @property
    def num_items(self) -> int:
        return int(self._data[ITEM].num_nodes)

    def stats(self) -> dict:
        """Table 1 figures of the processed data; see :func:`dataset_stats`."""
        return dataset_stats(self._data)

    def __repr__(self) -> str:
        mods = ', '.join(getattr(self._data, 'modalities', None) or []) or 'none'
        return (f'{self.__class__.__name__}({self.name}, users={self.num_users}, '
                f'items={self.num_items}, train={self._data[EDGE].edge_index.size(1)}, '
                f'modalities=[{mods}])')

    def _missing_message(self, missing: list[str]) -> str:
        info = self.info
        title = info.title if info else self.name
        dims = dict(info.modality_dims) if info else {}
        users = f'{info.users:,}' if info else None
        items = f'{info.items:,}' if info else None
        lines = [f'{self.__class__.__name__} ({title}): raw files missing in {self.raw_dir}',
                 'Expected files:']
        width = max(len(f) for f in self.raw_file_names)
        for f in self.raw_file_names:
            state = 'present' if f not in missing else 'MISSING' + self._missing_state(f)
            modality = modality_from_file(f)
            if modality is None:
                shape = ('JSON object user id -> list of item ids' if f.endswith('.json')
                         else 'pickled scipy.sparse matrix users x items')
                if users:
                    shape += f' ({users} users, {items} items)'
            else:
                rows = items.replace(',', '') if items else 'num_items'
                shape = f'float array [{rows}, {dims.get(modality, "dim")}] ({modality} features)'
            lines.append(f'  {f:<{width}}  {state:<7}  {shape}')
        lines += _modality_typos(missing, available_modalities(self.raw_dir))
        if self.raw_format == 'json':
            lines.append('Instead of the three JSON files, the DiffMM pickles trnMat.pkl, '
                         'valMat.pkl, tstMat.pkl, or the MMSSL train_mat with val.json and '
                         'test.json, are accepted.')
        found = available_modalities(self.raw_dir)
        if found:
            present = ', '.join(FEATURE_FILE.format(m) for m in found)
            lines.append(f'Feature files present: {present} (choose with modalities=[...]).')
        if info:
            paper = ', '.join(f'{m} {d}-d' for m, d in info.modality_dims)
            lines.append(f'Paper (MMSSL, Table 1): {info.users:,} users, {info.items:,} items, '
                         f'{info.interactions:,} interactions, modalities: {paper}.')
            if info.note:
                lines.append(info.note)
            lines.append('Where to get them:')
            lines += [f'  - {s}' for s in info.sources]
        lines.append(f'Fix: place the files in {self.raw_dir} and load again (nothing is '
                     'downloaded), or load a subset with modalities=[...] (modalities=[] '
                     'needs only the split files).')
        return '\n'.join(lines)


def _modality_typos(missing: list[str], found: list[str]) -> list[str]:
    """A line per asked modality that has no file but resembles one that has."""
    import difflib
    lines = []
    for f in missing:
        m = modality_from_file(f)
        if m is None or m in found:
            continue
        close = difflib.get_close_matches(m, found, n=1)
        if close:
            lines.append(f'Modality {m!r} has no file {f}: did you mean {close[0]!r} '
                         f'(--modalities {close[0]})?')
    return lines

