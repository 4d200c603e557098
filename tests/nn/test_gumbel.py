"""Tests of ``mmssl_pyg/nn/gumbel.py``.

MMSSL building blocks against dense references written here: attention (Eq. 9), critic
(Eq. 4), gradient penalty (Eqs. 6-7), InfoNCE (Eq. 11), relation rows and top-k (Eq. 3).

Tests written for mutants of ``make mutate`` that survived in ``mmssl_pyg/nn/lowrank.py``,
``mmssl_pyg/nn/critic_memory.py``, ``mmssl_pyg/nn/gumbel.py`` and ``mmssl_pyg/nn/features.py``:
row selection of :class:`LowRankRows` with any part missing, an empty sparse residual, the
memory budget on a (simulated) CUDA device, Eq. 5's helpers and the feature scaling, each against
a value derived here (by hand, from a dense matrix built here, or from the documented contract).
See ``benchmarks/results/mutation/report.md``.

Tests written for mutants of ``make mutate`` that survived the other tests: defaults,
random draws and options of the layers in ``mmssl_pyg/nn/`` and the MMSSL model, each against
a value derived here (by hand, from a dense computation or from the documented contract).
See ``benchmarks/results/mutation/report.md``."""
from __future__ import annotations

import pytest
import torch

from mmssl_pyg.models.mmssl import MMSSL
from mmssl_pyg.nn.gumbel import (
    gumbel_noise,
    gumbel_transform,
    normalised_rows,
    softmax_is_sparse,
)
from mmssl_pyg.testing import _tiny_graph


# --------------------------------------------------------------------------- Eq. 5
@pytest.mark.parametrize('formula', ['paper', 'release'])
def test_gumbel_transform_reference(formula):
    torch.manual_seed(0)
    a = (torch.rand(3, 7) < 0.3).float()
    u = torch.rand(3, 7)
    g = -torch.log(-torch.log(u + 1e-8) + 1e-8)
    logits = (a + 1e-3 * g) / 0.5 if formula == 'paper' else a + (1e-3 / 0.5) * g
    ref = torch.exp(logits) / torch.exp(logits).sum(1, keepdim=True)
    assert torch.allclose(gumbel_transform(a, g, 1e-3, 0.5, formula), ref, atol=1e-6)
    torch.manual_seed(3)
    noise = gumbel_noise((1000,))
    assert abs(float(noise.mean()) - 0.5772) < 0.1  # Euler-Mascheroni: the Gumbel mean


# --------------------------------------------------------------------------- Eq. 5 helpers
def test_gumbel_noise_is_drawn_on_the_requested_device():
    # the meta device (shapes only) stands in for an accelerator on a CPU-only machine
    g = gumbel_noise((2, 3), device='meta')
    assert g.device.type == 'meta' and g.shape == (2, 3)


def test_gumbel_transform_normalises_over_the_items_of_each_row():
    """The softmax runs over the item (last) dimension whatever the leading shape: one row
    given as a vector, or a stack of batches."""
    gen = torch.Generator().manual_seed(4)
    a = (torch.rand(2, 3, 6, generator=gen) < 0.4).float()
    g = torch.randn(2, 3, 6, generator=gen)
    logits = (a + 1e-5 * g) / 0.005  # the paper's formula with the defaults, by hand
    e = (logits - logits.amax(-1, keepdim=True)).exp()  # shifted: logits reach 200
    want = e / e.sum(-1, keepdim=True)
    assert torch.allclose(gumbel_transform(a, g), want, atol=1e-6)
    assert torch.allclose(gumbel_transform(a[0, 1], g[0, 1]), want[0, 1], atol=1e-6)


def test_normalised_rows_by_hand_in_the_requested_dtype():
    # rows 0: items {1, 3}; row 1: none; row 2: items {0, 2, 4, 5}
    row, col = torch.tensor([0, 0, 2, 2, 2, 2]), torch.tensor([1, 3, 0, 2, 4, 5])
    want = torch.zeros(4, 6, dtype=torch.float64)
    want[0, [1, 3]] = 2 ** -0.5
    want[2, [0, 2, 4, 5]] = 0.5
    rows = normalised_rows(row, col, 4, 6, dtype=torch.float64)
    assert rows.value.dtype == torch.float64
    assert torch.allclose(rows.to_dense(), want, rtol=1e-12, atol=0)
    assert normalised_rows(row, col, 4, 6).value.dtype == torch.float32  # the default


def test_softmax_is_sparse_default_formula_and_the_boundary():
    # default formula: the paper's; (1 - 1e-5 * 21.4) / 0.005 = 199.96 >= 120
    assert softmax_is_sparse(1e-5, 0.005)
    assert not softmax_is_sparse(1e-5, 0.005, 'release')
    # "at least 120": a gap of exactly 120 (1 / (1/120) is 120.0 in float64) is sparse
    assert (1.0 - 0.0 * 21.4) / (1 / 120) == 120.0
    assert softmax_is_sparse(0.0, 1 / 120)
    assert not softmax_is_sparse(0.0, 1 / 119.5)


# --------------------------------------------------------------------------- critic
def test_gumbel_transform_defaults_and_release_formula():
    torch.manual_seed(0)
    a = (torch.rand(3, 6) < 0.4).float()
    g = torch.randn(3, 6)
    # documented defaults: scale 1e-5, temperature 0.005, the paper's formula
    want = torch.softmax((a + 1e-5 * g) / 0.005, dim=1)
    assert torch.allclose(gumbel_transform(a, g), want, atol=1e-6)
    release = torch.softmax(a + (1e-5 / 0.005) * g, dim=1)
    assert torch.allclose(gumbel_transform(a, g, formula='release'), release, atol=1e-6)


def test_gumbel_noise_by_hand(monkeypatch):
    gen = torch.Generator().manual_seed(3)
    got = gumbel_noise((4, 5), generator=gen)
    u = torch.rand((4, 5), generator=torch.Generator().manual_seed(3))
    assert torch.allclose(got, -torch.log(-torch.log(u + 1e-8) + 1e-8))
    assert torch.equal(gumbel_noise((4, 5), torch.Generator().manual_seed(3), 'cpu'), got)
    # at the ends of U(0, 1), where eps = 1e-8 decides: u = 0 and u = 1 - 2^-24
    u = torch.tensor([0.0, 0.5, 1 - 2 ** -24])
    monkeypatch.setattr(torch, 'rand', lambda *a, **k: u.clone())
    g = gumbel_noise((3,))
    # by hand (float64): -log(-log(1e-8) + 1e-8) = -log(18.4207) = -2.9134;
    # -log(-log(0.5) + 1e-8) = 0.3665; -log(5.9605e-8 + 1e-8) = -log(6.9605e-8) = 16.4804
    assert torch.allclose(g, torch.tensor([-2.9134, 0.3665, 16.4804]), atol=1e-3)


@pytest.mark.parametrize('scale,temperature,formula', [
    (1e-5, 0.005, 'paper'), (0.001, 0.00815, 'paper'), (0.001, 0.00816, 'paper'),
    (0.0, 1 / 119.5, 'paper'), (1e-5, 0.005, 'release'), (-0.001, 0.00815, 'paper')])
def test_softmax_is_sparse_threshold_by_hand(scale, temperature, formula):
    """Documented rule: the paper's formula with (1 - |s| 21.4) / tau >= 120 (a negative
    scale is refused by MMSSL, not by the function)."""
    # by hand: 0.9786 / 0.00815 = 120.07 (sparse), 0.9786 / 0.00816 = 119.93 (dense),
    # 1 / (1 / 119.5) = 119.5 (dense)
    want = formula == 'paper' and (1 - abs(scale) * 21.4) / temperature >= 120
    assert softmax_is_sparse(scale, temperature, formula) == want
    if scale >= 0:
        model = MMSSL(_tiny_graph(), embedding_dim=8, num_heads=2, gumbel_scale=scale,
                      gumbel_temperature=temperature, gumbel_formula=formula)
        assert model._softmax_is_sparse() == want
    assert want == (formula == 'paper' and temperature in (0.005, 0.00815))
