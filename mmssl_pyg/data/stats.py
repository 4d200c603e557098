"""Dataset statistics (the paper's Table 1) and the text of ``mmssl-pyg datasets``."""
from __future__ import annotations

from os import PathLike
from pathlib import Path

from torch_geometric.data import HeteroData, InMemoryDataset

from .folder import (
    available_modalities,
    order_modalities,
    raw_files_missing,
    resolve_raw_dir,
)
from .graph import EDGE, ITEM, USER, modality_features

#: Modalities come in this order when they are discovered from file names (others follow,
#: alphabetically).

# --------------------------------------------------------------------------------------------
# Statistics (the paper's Table 1)
# --------------------------------------------------------------------------------------------

def dataset_stats(data: HeteroData) -> dict:
    r"""Table 1 figures of a dataset's :class:`HeteroData`.

    Returns:
        dict: ``name``, ``users``, ``items``, ``train``, ``val``, ``test``, ``interactions``
        (all three splits), ``sparsity`` (:math:`1 - |E_{train}| / (|U| |I|)`, from counts,
        no dense matrix) and ``modalities`` (``{name: dim}``, in order).

    Note:
        The paper's Table 1 counts train + test interactions for the Amazon datasets
        (139,110 = 118,551 + 20,559 for Amazon-Baby) and computes its sparsity from that
        total; here ``sparsity`` uses the training pairs only.
    """
    store = data[EDGE]
    users, items = int(data[USER].num_nodes), int(data[ITEM].num_nodes)
    train = int(store.edge_index.size(1))
    val, test = int(store.val_edge_index.size(1)), int(store.test_edge_index.size(1))
    return {
        'name': getattr(data, 'name', None) or 'custom',
        'users': users, 'items': items,
        'train': train, 'val': val, 'test': test, 'interactions': train + val + test,
        'sparsity': 1.0 - train / (users * items) if users * items else 0.0,
        'modalities': {m: int(f.size(-1)) for m, f in modality_features(data).items()},
    }


def _as_stats(obj) -> dict:
    if isinstance(obj, dict):
        return obj
    from .dataset import MMSSLDataset
    if isinstance(obj, MMSSLDataset):
        return obj.stats()
    if isinstance(obj, InMemoryDataset):
        return dataset_stats(obj[0])
    return dataset_stats(obj)


def format_stats(*items) -> str:
    r"""Format statistics as the paper's Table 1: one column per dataset.

    Args:
        *items: datasets, :class:`HeteroData` objects or :func:`dataset_stats` dicts (or one
            list of them).

    Example:
        >>> print(format_stats(load_dataset('tiktok-mini')))
                      tiktok-mini
        Users               1,000
        ...
    """
    if len(items) == 1 and isinstance(items[0], (list, tuple)):
        items = tuple(items[0])
    stats = [_as_stats(x) for x in items]
    modalities = order_modalities(m for s in stats for m in s['modalities'])
    rows: list[tuple[str, list[str]]] = [
        ('Users', [f"{s['users']:,}" for s in stats]),
        ('Items', [f"{s['items']:,}" for s in stats]),
        ('Train', [f"{s['train']:,}" for s in stats]),
        ('Val', [f"{s['val']:,}" for s in stats]),
        ('Test', [f"{s['test']:,}" for s in stats]),
        ('Interactions', [f"{s['interactions']:,}" for s in stats]),
        ('Sparsity (train)', [f"{100 * s['sparsity']:.3f}%" for s in stats]),
    ]
    rows += [(f'{m} dim', [str(s['modalities'].get(m, '-')) for s in stats])
             for m in modalities]
    if not modalities:
        rows.append(('Modalities', ['none'] * len(stats)))
    label_w = max(len(label) for label, _ in rows)
    col_w = [max(len(s['name']), *(len(vals[j]) for _, vals in rows))
             for j, s in enumerate(stats)]
    lines = [' ' * label_w + ''.join(f'  {s["name"]:>{w}}' for s, w in zip(stats, col_w))]
    lines += [f'{label:<{label_w}}' + ''.join(f'  {v:>{w}}' for v, w in zip(vals, col_w))
              for label, vals in rows]
    return '\n'.join(lines)


def print_stats(*items) -> None:
    """Print :func:`format_stats` of datasets, graphs or stats dicts."""
    print(format_stats(*items))


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
    from .catalog import DATASETS, _is_path, _registry_key, load_dataset
    from .dataset import default_root

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
