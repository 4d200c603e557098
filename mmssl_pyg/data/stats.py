"""Dataset statistics (the paper's Table 1) and their text table."""
from __future__ import annotations

from torch_geometric.data import HeteroData, InMemoryDataset

from .folder import order_modalities
from .graph import EDGE, ITEM, USER, modality_features

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
    if isinstance(obj, InMemoryDataset) and callable(getattr(type(obj), 'stats', None)):
        return obj.stats()  # MMSSLDataset: the processed data, without the transform
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
