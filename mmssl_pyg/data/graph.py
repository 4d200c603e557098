"""The in-memory interaction graph every model and the trainer share.

:class:`RecGraph` is a thin, device-movable view of the :class:`~torch_geometric.data.HeteroData`
that the datasets build (see :mod:`mmssl_pyg.data.dataset` for the storage layout). It owns the
training edges, the held-out edges and the item modality features, and builds the sparse
normalised adjacency matrices that the message-passing layers consume. Nothing here is ever a
dense ``users x items`` tensor.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

#: Edge types of the bipartite graph, used by every dataset.
USER, ITEM = 'user', 'item'
EDGE = (USER, 'interacts', ITEM)
REV_EDGE = (ITEM, 'rev_interacts', USER)
FEAT_SUFFIX = '_feat'


def modality_features(data) -> dict[str, Tensor]:
    """Return ``{modality: [num_items, dim] features}`` stored on ``data['item']``.

    Modalities are stored as ``data['item'][f'{name}_feat']`` (the name of the raw
    ``<name>_feat.npy`` file); ``data.modalities`` keeps their order.
    """
    store = data[ITEM]
    names = getattr(data, 'modalities', None)
    if names is None:
        names = sorted(k[: -len(FEAT_SUFFIX)] for k in store.keys() if k.endswith(FEAT_SUFFIX))
    return {name: store[name + FEAT_SUFFIX] for name in names}


def bipartite_adjacency(edge_index: Tensor, num_users: int, num_items: int,
                        edge_weight: Tensor | None = None, norm: str = 'sym',
                        layout=torch.sparse_csr) -> tuple[Tensor, Tensor]:
    """Build the normalised ``(users x items)`` and ``(items x users)`` sparse matrices.

    Args:
        edge_index: ``[2, E]`` (user, item) pairs.
        edge_weight: optional ``[E]`` weights (1 when omitted).
        norm: ``'sym'`` gives :math:`1/\\sqrt{|N_u||N_i|}`; ``'row'`` gives each side its
            own one-sided factor (:math:`1/\\sqrt{|N_u|}` for user rows and
            :math:`1/\\sqrt{|N_i|}` for item rows, as the MMSSL release does); ``'mean'``
            averages (:math:`1/|N_u|`, :math:`1/|N_i|`); ``'none'`` keeps raw weights.
        layout: ``torch.sparse_csr`` (fast path) or ``torch.sparse_coo``.

    Returns:
        ``(adj_ui, adj_iu)``: ``adj_ui @ item_x`` aggregates items into users and
        ``adj_iu @ user_x`` aggregates users into items.
    """
    u, i = edge_index[0], edge_index[1]
    w = torch.ones(u.numel(), device=u.device) if edge_weight is None else edge_weight.float()
    deg_u = torch.zeros(num_users, device=u.device).index_add_(0, u, w)
    deg_i = torch.zeros(num_items, device=u.device).index_add_(0, i, w)
    if norm == 'sym':
        val = w * deg_u[u].clamp(min=1e-12).rsqrt() * deg_i[i].clamp(min=1e-12).rsqrt()
        val_ui = val_iu = val
    elif norm == 'row':
        val_ui = w * deg_u[u].clamp(min=1e-12).rsqrt()
        val_iu = w * deg_i[i].clamp(min=1e-12).rsqrt()
    elif norm == 'mean':
        val_ui = w / deg_u[u].clamp(min=1e-12)
        val_iu = w / deg_i[i].clamp(min=1e-12)
    elif norm == 'none':
        val_ui = val_iu = w
    else:
        raise ValueError(f"norm must be 'sym', 'row', 'mean' or 'none', got {norm!r}")
    adj_ui = _sparse(u, i, val_ui, (num_users, num_items), layout)
    adj_iu = _sparse(i, u, val_iu, (num_items, num_users), layout)
    return adj_ui, adj_iu


def _sparse(row: Tensor, col: Tensor, value: Tensor, size, layout) -> Tensor:
    coo = torch.sparse_coo_tensor(torch.stack([row, col]), value, size, device=row.device,
                                  check_invariants=False).coalesce()
    if layout == torch.sparse_coo:
        return coo
    if layout == torch.sparse_csr:
        return coo.to_sparse_csr()
    raise ValueError(f'unsupported layout {layout}')


def unique_edges(edge_index: Tensor, num_items: int) -> Tensor:
    """The distinct (user, item) pairs of ``edge_index``, sorted by (user, item), as a
    ``[2, n]`` long tensor (1-D keys: ``torch.unique(dim=1)`` is ~20x slower on millions)."""
    keys = torch.unique(edge_index[0].long() * num_items + edge_index[1].long())
    return torch.stack([keys // num_items, keys % num_items])


def csr_rowptr(row: Tensor, num_rows: int) -> Tensor:
    """CSR row pointers ``[num_rows + 1]`` of the sorted row ids ``row``."""
    rowptr = torch.zeros(num_rows + 1, dtype=torch.long, device=row.device)
    rowptr[1:] = torch.cumsum(torch.bincount(row, minlength=num_rows), 0)
    return rowptr


def csr_rows(edge_index: Tensor, num_rows: int) -> tuple[Tensor, Tensor]:
    """Sort ``edge_index`` by row and return ``(rowptr, col)``: each row's columns."""
    row, col = edge_index
    perm = torch.argsort(row * (int(col.max()) + 1 if col.numel() else 1) + col)
    row, col = row[perm], col[perm]
    return csr_rowptr(row, num_rows), col


@dataclass
class RecGraph:
    """Training graph, held-out interactions and item features of one dataset.

    Attributes:
        num_users, num_items: node counts.
        train_edge_index: ``[2, E]`` (user, item) training interactions.
        val_edge_index, test_edge_index: held-out (user, item) pairs.
        features: ``{modality: [num_items, d_m]}`` float32 features (may be empty).
        name: dataset name (used to pick presets and cache keys).
    """
    num_users: int
    num_items: int
    train_edge_index: Tensor
    val_edge_index: Tensor
    test_edge_index: Tensor
    features: dict[str, Tensor] = field(default_factory=dict)
    name: str = 'custom'

    @classmethod
    def from_hetero(cls, data, name: str | None = None,
                    modalities: list[str] | None = None) -> RecGraph:
        """Build from a dataset's :class:`HeteroData` (optionally a subset of modalities)."""
        store = data[EDGE]
        feats = modality_features(data)
        if modalities is not None:
            missing = [m for m in modalities if m not in feats]
            if missing:
                raise KeyError(f'modalities {missing} not in the dataset; it has {list(feats)}')
            feats = {m: feats[m] for m in modalities}
        return cls(
            num_users=int(data[USER].num_nodes), num_items=int(data[ITEM].num_nodes),
            train_edge_index=store.edge_index, val_edge_index=store.val_edge_index,
            test_edge_index=store.test_edge_index,
            features={k: v.float() for k, v in feats.items()},
            name=name or getattr(data, 'name', None) or 'custom')

    @property
    def modalities(self) -> list[str]:
        return list(self.features)

    @property
    def num_train(self) -> int:
        return int(self.train_edge_index.size(1))

    def to(self, device) -> RecGraph:
        return RecGraph(self.num_users, self.num_items, self.train_edge_index.to(device),
                        self.val_edge_index.to(device), self.test_edge_index.to(device),
                        {k: v.to(device) for k, v in self.features.items()}, self.name)

    def adjacency(self, norm: str = 'sym', layout=torch.sparse_csr) -> tuple[Tensor, Tensor]:
        """Normalised ``(adj_ui, adj_iu)`` of the training graph."""
        return bipartite_adjacency(self.train_edge_index, self.num_users, self.num_items,
                                   norm=norm, layout=layout)

    def train_rows(self) -> tuple[Tensor, Tensor]:
        """CSR ``(rowptr, item)`` of each user's training items (for exclusion and sampling)."""
        return csr_rows(self.train_edge_index, self.num_users)

    def __repr__(self) -> str:
        mods = ', '.join(f'{k}={tuple(v.shape)}' for k, v in self.features.items()) or 'none'
        return (f'RecGraph({self.name}: users={self.num_users}, items={self.num_items}, '
                f'train={self.num_train}, val={self.val_edge_index.size(1)}, '
                f'test={self.test_edge_index.size(1)}, modalities=[{mods}])')
