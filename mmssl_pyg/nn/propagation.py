r"""LightGCN propagation, the one implementation every model here uses (He et al.,
`"LightGCN" <https://arxiv.org/abs/2002.02126>`_, SIGIR 2020; MMSSL's Eq. 10)."""
from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from .conv import BipartiteConv

Aggregate = Callable[[Tensor], Tensor]


def light_propagate(user_x: Tensor, item_x: Tensor, num_layers: int, to_users: Aggregate,
                    to_items: Aggregate, reduce: str = 'mean') -> tuple[Tensor, Tensor]:
    r"""LightGCN propagation of layer-0 embeddings:

    .. math::
        \mathbf{E}_U^{(l+1)} = \mathrm{to\_users}(\mathbf{E}_I^{(l)}), \quad
        \mathbf{E}_I^{(l+1)} = \mathrm{to\_items}(\mathbf{E}_U^{(l)}), \quad
        \bar{\mathbf{E}} = \frac{1}{L+1} \sum_{l=0}^{L} \mathbf{E}^{(l)}

    Args:
        user_x, item_x: layer-0 embeddings ``[n_u, d]``, ``[n_i, d]``.
        num_layers: :math:`L`.
        to_users: aggregation of item rows into users (``[n_i, d] -> [n_u, d]``).
        to_items: aggregation of user rows into items (``[n_u, d] -> [n_i, d]``).
        reduce: ``'mean'`` (default, LightGCN) or ``'sum'`` (GRCN) over the layers.
    """
    if reduce not in ('mean', 'sum'):
        raise ValueError(f"reduce must be 'mean' or 'sum', got {reduce!r}")
    user_sum, item_sum = user_x, item_x
    for _ in range(num_layers):
        user_x, item_x = to_users(item_x), to_items(user_x)
        user_sum, item_sum = user_sum + user_x, item_sum + item_x
    if reduce == 'sum':
        return user_sum, item_sum
    return user_sum / (num_layers + 1), item_sum / (num_layers + 1)


def sparse_aggregations(conv: BipartiteConv, adj_ui: Tensor,
                        adj_iu: Tensor) -> tuple[Aggregate, Aggregate]:
    """``(to_users, to_items)`` for :func:`light_propagate` over torch.sparse adjacencies
    ``adj_ui`` ``[n_u, n_i]`` and ``adj_iu`` ``[n_i, n_u]`` (each the other's transpose)."""
    return (lambda x: conv(x, adj_ui, adj_rev=adj_iu),
            lambda x: conv(x, adj_iu, adj_rev=adj_ui))
