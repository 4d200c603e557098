"""Tests written for mutants of ``make mutate`` that survived the other tests: defaults,
random draws and options of the layers in ``mmssl_pyg/nn/`` and the MMSSL model, each against
a value derived here (by hand, from a dense computation or from the documented contract).
See ``benchmarks/results/mutation/report.md``."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmssl_pyg.nn import (
    knn_edge_index,
)


# --------------------------------------------------------------------------- topk
@pytest.mark.parametrize('cosine', [True, False])
def test_knn_edge_index_matches_a_dense_reference(cosine):
    torch.manual_seed(0)
    x = torch.randn(9, 4) * torch.rand(9, 1) * 5  # rows of different norms
    edge_index = knn_edge_index(x, 3, block_size=4, cosine=cosine)
    y = F.normalize(x, dim=1) if cosine else x
    scores = y @ y.t()
    scores.fill_diagonal_(float('-inf'))  # no self loops
    want = scores.topk(3, dim=1).indices
    assert edge_index.shape == (2, 27)
    assert torch.equal(edge_index[0], torch.arange(9).repeat_interleave(3))
    assert torch.equal(edge_index[1].view(9, 3).sort(1).values, want.sort(1).values)
    assert torch.equal(knn_edge_index(x, 3, cosine=cosine), edge_index)  # default block size
    if cosine:
        assert torch.equal(knn_edge_index(x, 3), edge_index)  # cosine by default
