"""Tests of ``mmssl_pyg/nn/critic_memory.py``.

MMSSL's bounded critic (``critic_columns``): a random subset of item columns per batch.

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

import os

import pytest
import torch

from mmssl_pyg.data.graph import RecGraph
from mmssl_pyg.models.base import Batch
from mmssl_pyg.models.mmssl import MMSSL
from mmssl_pyg.nn import (
    RelationCritic,
    check_critic_memory,
)
from mmssl_pyg.nn.critic_memory import available_memory, critic_hidden_sizes, critic_memory_estimate


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


def test_memory_check_uses_the_column_count_on_a_200k_item_catalogue():
    n_items, c = 200_000, 4096
    # the full critic: 10^10 parameters, refused before allocation
    with pytest.raises(ValueError, match='critic_columns'):
        check_critic_memory(n_items, 2 * 1024)
    params, need = critic_memory_estimate(c, 2 * 1024)
    assert params < c * c / 4 + c * c / 32 + 10 * c and need < 2**30
    ei = torch.stack([torch.arange(50), torch.arange(50) * 3999])
    graph = RecGraph(50, n_items, ei, ei[:, :5], ei[:, :5], {'img': torch.rand(n_items, 2)},
                     'wide')
    with pytest.raises(ValueError, match='n_items=200,000'):
        MMSSL(graph, embedding_dim=4, num_heads=1, topk_rate=1e-4)
    model = MMSSL(graph, embedding_dim=4, num_heads=1, topk_rate=1e-4, critic_columns=c)
    assert model.critic.lin1.weight.shape == (c // 4, c)
    n_critic = sum(p.numel() for p in model.critic_parameters())
    assert n_critic == params
    model.train()
    users = torch.arange(8)
    batch = Batch(users, ei[1, :8], torch.randint(0, n_items, (8,)))
    out = model.critic_loss(batch)
    out['loss'].backward()
    assert torch.isfinite(out['loss']) and model.critic.lin1.weight.grad is not None


def test_critic_memory_check_refuses_before_allocating():
    params, need = critic_memory_estimate(2_000_000, 2048)
    assert params > 2_000_000 ** 2 / 4 and need > 16 * params
    with pytest.raises(ValueError) as err:
        check_critic_memory(2_000_000, 2048, max_bytes=1 << 30)
    msg = str(err.value)
    for part in ('n_items=2,000,000', f'{params:,} parameters', f'{need:,} bytes',
                 '1,073,741,824 bytes', 'max_critic_memory', "ablation='wo_asl'"):
        assert part in msg
    with pytest.raises(ValueError, match='physical memory'):  # no machine has 16 TB
        check_critic_memory(2_000_000, 2048)
    assert check_critic_memory(100, 2048) > 0


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


def test_critic_memory_estimate_by_hand():
    # n = 80 items: widths 20 and 10; Linear(80, 20), Linear(20, 10), Linear(10, 1) and two
    # batch norms (weight and bias each)
    params = (80 * 20 + 20) + (20 * 10 + 10) + (10 + 1) + 2 * (20 + 10)
    # 16 bytes per parameter, plus 4 bytes x rows x (3 n + 12 (h1 + h2))
    activations = 4 * 7 * (3 * 80 + 12 * (20 + 10))
    assert critic_memory_estimate(80, 7) == (params, 16 * params + activations)
    assert critic_hidden_sizes(80) == (20, 10) and critic_hidden_sizes(3) == (1, 1)
    assert sum(p.numel() for p in RelationCritic(80).parameters()) == params


def test_critic_memory_check_boundary_and_message():
    _, need = critic_memory_estimate(80, 7)
    assert check_critic_memory(80, 7, max_bytes=need) == need  # exactly enough fits
    with pytest.raises(ValueError) as err:
        check_critic_memory(80, 7, max_bytes=need - 1)
    gib = f'{need / 2**30:,.2f}'
    assert str(err.value) == (
        'The MMSSL critic (Eq. 4) reads rows of n_items=80 values; its first layer alone has '
        "n_items^2/4 weights, 1,901 parameters in all. With gradients, Adam's two moments and "
        f'the activations of 7 rows a critic step needs about {gib} GiB ({need:,} bytes), more '
        f'than the {gib} GiB ({need - 1:,} bytes) available (max_critic_memory). Fix: let the '
        'critic read a random subset of item columns per step (MMSSL critic_columns=4096, for '
        'example), train on a smaller item catalogue (filter rare items), use the w/o-ASL '
        "ablation (ablation='wo_asl', no critic) or the graph auto-encoder variant "
        "(ablation='rp_gae'), or raise max_critic_memory if more memory really is available.")


def test_available_memory_on_cpu_is_the_physical_memory():
    import os
    got, what = available_memory('cpu')
    assert got == os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')
    assert what == 'physical memory of this machine'
    assert available_memory() == (got, what)  # default device: the CPU
    with open('/proc/meminfo') as f:  # MemTotal is the physical memory less the kernel's
        total_kib = int(next(line for line in f if line.startswith('MemTotal')).split()[1])
    assert 0.8 * got <= total_kib * 1024 <= got


def test_available_memory_when_the_system_cannot_tell(monkeypatch):
    import os

    def no_sysconf(name):
        raise ValueError(name)

    monkeypatch.setattr(os, 'sysconf', no_sysconf)
    assert available_memory('cpu') == (2 ** 62, 'unknown (no limit checked)')


def test_critic_memory_message_converts_to_gib():
    import re
    with pytest.raises(ValueError) as err:
        check_critic_memory(50_000, 1024, max_bytes=3 * 2 ** 30)
    msg = str(err.value)
    assert 'more than the 3.00 GiB (3,221,225,472 bytes) available (max_critic_memory)' in msg
    gib, need = re.search(r'about ([\d,.]+) GiB \(([\d,]+) bytes\)', msg).groups()
    assert float(gib.replace(',', '')) == round(int(need.replace(',', '')) / 2 ** 30, 2)
    assert float(gib.replace(',', '')) > 3
