"""Tests written for mutants of ``make mutate`` that survived in ``mmssl_pyg/nn/lowrank.py``,
``mmssl_pyg/nn/critic_memory.py``, ``mmssl_pyg/nn/gumbel.py`` and ``mmssl_pyg/nn/features.py``:
row selection of :class:`LowRankRows` with any part missing, an empty sparse residual, the
memory budget on a (simulated) CUDA device, Eq. 5's helpers and the feature scaling, each against
a value derived here (by hand, from a dense matrix built here, or from the documented contract).
See ``benchmarks/results/mutation/report.md``."""
from __future__ import annotations

import os

import pytest
import torch

from mmssl_pyg.nn.critic_memory import available_memory, check_critic_memory
from mmssl_pyg.nn.features import scale_features
from mmssl_pyg.nn.gumbel import (
    gumbel_noise,
    gumbel_transform,
    normalised_rows,
    softmax_is_sparse,
)
from mmssl_pyg.nn.lowrank import LowRankRows


# --------------------------------------------------------------------------- LowRankRows
def _parts(seed: int = 0):
    """3 x 5 rows: low-rank factors, a per-row scale and three sparse entries."""
    gen = torch.Generator().manual_seed(seed)
    left, right = torch.randn(3, 2, generator=gen), torch.randn(5, 2, generator=gen)
    scale = torch.rand(3, generator=gen) + 0.5
    index = torch.tensor([[0, 1, 2], [0, 3, 4]])
    value = torch.tensor([1.5, -2.0, 0.25])
    return left, right, scale, index, value


def _dense_by_hand(left=None, right=None, scale=None, index=None, value=None):
    """diag(scale) L R^T plus the entries, built here entry by entry."""
    out = torch.zeros(3, 5)
    if left is not None:
        for r in range(3):
            for c in range(5):
                s = 1.0 if scale is None else float(scale[r])
                out[r, c] = s * float(left[r] @ right[c])
    if index is not None and value is not None:
        for (r, c), v in zip(index.t().tolist(), value.tolist()):
            out[r, c] += v
    return out


@pytest.mark.parametrize('parts', ['low-rank only', 'no scale', 'sparse only', 'all'])
def test_select_rows_with_any_part_missing(parts):
    """Every part of LowRankRows is optional: selecting rows (in the given order) of rows that
    lack the residual, the scale or the low-rank factors gives those rows of the dense matrix."""
    left, right, scale, index, value = _parts()
    kw = {'low-rank only': dict(left=left, right=right, scale=scale),
          'no scale': dict(left=left, right=right, index=index, value=value),
          'sparse only': dict(index=index, value=value),
          'all': dict(left=left, right=right, scale=scale, index=index, value=value)}[parts]
    rows = LowRankRows(3, 5, **kw)
    want = _dense_by_hand(**kw)
    pick = torch.tensor([2, 0])
    sel = rows.select_rows(pick)
    assert sel.num_rows == 2 and sel.num_cols == 5
    assert torch.allclose(sel.to_dense(), want[[2, 0]], atol=1e-6)
    w = torch.randn(4, 5, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(sel.linear(w), want[[2, 0]] @ w.t(), atol=1e-5)
    if 'index' not in kw:  # no residual selected from nothing
        assert sel.index is None and sel.value is None


def test_selecting_keeps_an_index_without_values_as_no_residual():
    """The value part is optional on its own: rows holding an index but no values have no
    sparse residual (to_dense and linear skip it), and selecting rows or columns keeps that."""
    left, right, scale, index, _ = _parts()
    rows = LowRankRows(3, 5, left, right, scale, index=index)
    want = _dense_by_hand(left, right, scale)
    assert torch.allclose(rows.to_dense(), want, atol=1e-6)
    by_row = rows.select_rows(torch.tensor([1, 2]))
    assert by_row.value is None
    assert torch.allclose(by_row.to_dense(), want[[1, 2]], atol=1e-6)
    cols = torch.tensor([0, 3])
    by_col = rows.select_columns(cols)
    assert by_col.value is None
    assert torch.allclose(by_col.to_dense(), want[:, cols], atol=1e-6)


@pytest.mark.parametrize('grad', [False, True])
def test_an_empty_residual_adds_nothing_under_autocast(grad):
    """linear() is ``to_dense() @ weight.T``: a sparse residual with no entry (here: none of
    its entries lies in the selected columns) adds nothing, not even a dtype change. Under
    bfloat16 autocast the low-rank product is bfloat16, as the dense reference is."""
    left, right, _, index, value = _parts()
    value = value.clone().requires_grad_(grad)
    cols = torch.tensor([1, 2])  # the entries sit in columns 0, 3 and 4
    sel = LowRankRows(3, 5, left, right, index=index, value=value).select_columns(cols)
    assert sel.value.numel() == 0
    bare = LowRankRows(3, 2, left, right[cols])
    w = torch.randn(4, 2, generator=torch.Generator().manual_seed(2))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        got = sel.linear(w)
        dense = (left @ right[cols].t()) @ w.t()  # the dense computation, by hand
        want = bare.linear(w)
    assert dense.dtype == torch.bfloat16
    assert got.dtype == dense.dtype
    assert torch.equal(got, want)


# --------------------------------------------------------------------------- critic memory
@pytest.fixture
def fake_gpu(monkeypatch):
    """CUDA reported available; ``mem_get_info`` answers per device (cuda:1 has 3 GiB free,
    any other device 5 GiB) and records the devices asked about."""
    asked = []

    def mem_get_info(device=None):
        asked.append(device)
        free = 3 * 2 ** 30 if device == torch.device('cuda', 1) else 5 * 2 ** 30
        return free, 80 * 2 ** 30

    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'mem_get_info', mem_get_info)
    return asked


def test_available_memory_reads_the_free_memory_of_the_given_cuda_device(fake_gpu):
    assert available_memory('cuda:1') == (3 * 2 ** 30, 'free memory on cuda:1')
    assert available_memory(torch.device('cuda', 1))[0] == 3 * 2 ** 30
    assert fake_gpu == [torch.device('cuda', 1)] * 2


def test_available_memory_of_the_cpu_ignores_an_available_gpu(fake_gpu):
    physical = os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')
    assert available_memory('cpu') == (physical, 'physical memory of this machine')
    assert available_memory() == (physical, 'physical memory of this machine')
    assert fake_gpu == []


def test_an_unknown_device_name_is_an_error():
    with pytest.raises(RuntimeError, match='gpu'):
        available_memory('gpu')


def test_check_critic_memory_uses_the_free_memory_of_its_device(fake_gpu):
    # 20,000 items, 64 rows: h1 = 5,000, h2 = 2,500; by hand
    # params = 20,000*5,000 + 5,000 + 5,000*2,500 + 2,500 + 2,500 + 1 + 2*7,500 = 112,525,001
    # bytes = 16 * params + 4 * 64 * (3 * 20,000 + 12 * 7,500) = 1,800,400,016 + 38,400,000
    need = 16 * 112_525_001 + 4 * 64 * (3 * 20_000 + 12 * 7_500)
    assert need == 1_838_800_016  # 1.71 GiB: fits 3 GiB (cuda:1), not 1.5 GiB
    assert check_critic_memory(20_000, 64, device='cuda:1') == need
    assert fake_gpu == [torch.device('cuda', 1)]
    # 30,000 items need 4.05 GiB: more than cuda:1's 3 GiB free
    with pytest.raises(ValueError, match=r'GiB \(3,221,225,472 bytes\) available '
                                         r'\(free memory on cuda:1\)'):
        check_critic_memory(30_000, 64, device='cuda:1')


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


# --------------------------------------------------------------------------- features
def test_feature_norm_choices_are_declared_once_for_every_model():
    """``scale_features`` trusts its mode: the choices are the ``FeatureNorm`` declaration,
    which every model with features uses, and which its constructor checks."""
    from mmssl_pyg.models import MODELS
    from mmssl_pyg.nn.features import FeatureNorm
    from mmssl_pyg.utils.options import declared_options, rule_of
    x = torch.ones(2, 3)
    assert torch.equal(scale_features(x, 'none'), x)
    rules = [opt.rule for cls in set(MODELS.values())
             for opt in declared_options(cls).values() if opt.name.endswith('_norm')]
    assert len(rules) == 7 and all(r == rule_of(FeatureNorm) for r in rules)
    assert rule_of(FeatureNorm).choices == ('standard', 'l2', 'none')


def test_standard_scaling_of_narrow_and_constant_columns():
    """Every column with a spread above 1e-12 goes to unit population variance, also one
    narrower than 1; a column whose standard deviation is 1e-12 or less counts as constant and
    is only centred."""
    d = torch.tensor(1e-12).item()  # 1e-12 in float32
    x = torch.tensor([[1.0, 7.0, -d], [2.0, 7.0, d]])  # std: 0.5, 0, 1e-12
    got = scale_features(x, 'standard')
    want = torch.tensor([[-1.0, 0.0, -d], [1.0, 0.0, d]])  # (x - mean) / std, by hand
    assert torch.equal(got, want)
