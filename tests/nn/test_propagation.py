"""Tests written for mutants of ``make mutate`` that survived in ``mmssl_pyg/nn/adjacency.py``
and ``mmssl_pyg/nn/propagation.py``: the adjacency's stored buffers, its aggregations in every
layout and LightGCN's layer reduction, each against a value derived here (by hand, from a dense
matrix built here, or from the documented contract). See
``benchmarks/results/mutation/report.md``."""
from __future__ import annotations

import pytest
import torch

from mmssl_pyg.nn.propagation import light_propagate


# --------------------------------------------------------------------------- propagation
def test_light_propagate_sum_and_mean_reductions_and_bad_reduce():
    """L = 2 layers by hand: E_U^(l+1) = A E_I^(l), E_I^(l+1) = A^T E_U^(l); 'sum' (GRCN)
    adds the three layers, 'mean' (LightGCN, default) divides that sum by 3."""
    a = torch.tensor([[1.0, 0.0, 2.0], [0.0, 3.0, 1.0]])  # [2 users, 3 items]
    u0 = torch.tensor([[1.0], [2.0]])
    i0 = torch.tensor([[1.0], [0.0], [-1.0]])
    u1 = torch.tensor([[1.0 - 2.0], [-1.0]])  # A i0
    i1 = torch.tensor([[1.0], [6.0], [4.0]])  # A^T u0
    u2 = torch.tensor([[1.0 + 8.0], [18.0 + 4.0]])  # A i1
    i2 = torch.tensor([[-1.0], [-3.0], [-2.0 - 1.0]])  # A^T u1
    to_users, to_items = (lambda x: a @ x), (lambda x: a.t() @ x)
    u, i = light_propagate(u0, i0, 2, to_users, to_items, reduce='sum')
    assert torch.equal(u, u0 + u1 + u2) and torch.equal(i, i0 + i1 + i2)
    u, i = light_propagate(u0, i0, 2, to_users, to_items)
    assert torch.allclose(u, (u0 + u1 + u2) / 3) and torch.allclose(i, (i0 + i1 + i2) / 3)
    with pytest.raises(ValueError, match=r"reduce must be 'mean' or 'sum', got 'max'"):
        light_propagate(u0, i0, 2, to_users, to_items, reduce='max')
