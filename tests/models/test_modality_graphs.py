"""Tests written for mutants of ``make mutate`` in ``mmssl_pyg/models/modality_graphs.py``
that survived the other tests: the device the store's tensors are made on, its module
conversions (``double``, ``to_empty``) and the shapes it hands to ``all_gather``, each
against a value derived here from the documented contract.

A CPU machine has one other device, ``meta`` (shapes only, no data): a store moved there,
or a default device set there, stands in for a model on a GPU, so a tensor made on the
wrong device shows on a CPU run. See ``benchmarks/results/mutation/report.md``."""
from __future__ import annotations

import torch

from mmssl_pyg.models.modality_graphs import ModalityGraphs
from mmssl_pyg.nn.adjacency import BipartiteAdjacency

NUM_USERS, NUM_ITEMS, K = 3, 4, 2


META = torch.device('meta')


def _graphs() -> ModalityGraphs:
    """3 users, 4 items, 2 modalities, k = 2, edge-list adjacencies (float ``*_value``
    buffers)."""
    edges = torch.tensor([[0, 0, 1, 2], [0, 1, 2, 3]])
    initial = BipartiteAdjacency(edges, NUM_USERS, NUM_ITEMS, 'sym', 'edge_index')
    return ModalityGraphs(edges, NUM_USERS, NUM_ITEMS, 2, K, 'sym', 'edge_index', initial)


def _sent_by(graphs: ModalityGraphs) -> list[torch.Tensor]:
    """The tensors ``graphs`` hands to a one-process ``all_gather``, in call order (a second
    rank's side of a two-process gather)."""
    sent = []
    graphs.gather(lambda t: (sent.append(t), [t])[1])
    return sent


# --------------------------------------------------------------------------- merged_pending
def test_merged_pending_ignores_the_default_device():
    """The latest batch wins for a user drawn twice; the positions and the per-user table
    are made on the pending tensors' device, not on torch's default device (a model left on
    the CPU while the default device is another one)."""
    g = _graphs()
    g.collect(torch.tensor([0, 2]), [torch.tensor([[1, 2], [3, -1]]),
                                     torch.tensor([[0, 1], [2, 3]])])
    g.collect(torch.tensor([2, 1]), [torch.tensor([[0, 3], [2, -1]]),
                                     torch.tensor([[1, 3], [0, 2]])])
    with torch.device(META):
        users, idx, step = g.merged_pending()
    # by hand: user 0 from batch 0 (row 0); user 2 from batch 1 (row 0), user 1 batch 1 row 1
    assert users.device.type == 'cpu'
    assert users.tolist() == [0, 2, 1]
    assert step.tolist() == [0, 1, 1]
    assert idx[0].tolist() == [[1, 2], [0, 3], [2, -1]]
    assert idx[1].tolist() == [[0, 1], [1, 3], [0, 2]]


# --------------------------------------------------------------------------- gather
def test_gather_on_an_idle_rank_sends_the_shapes_of_the_busy_ones():
    """``all_gather`` lets only the first dimension differ between processes (the
    Distributed helper pads to the longest and gathers equal shapes): a rank with nothing
    pending sends ``[0, k]`` int32 neighbours and ``[0]`` long users, like a busy rank's."""
    busy = _graphs()
    busy.collect(torch.tensor([0, 2]), [torch.tensor([[1, 2], [3, -1]]),
                                        torch.tensor([[0, 1], [2, 3]])])
    it = iter(_sent_by(busy))

    def all_gather(t):
        other = next(it)
        assert t.dtype == other.dtype and t.shape[1:] == other.shape[1:], \
            f'rank 0 sent {t.dtype} {tuple(t.shape)}, rank 1 {other.dtype} {tuple(other.shape)}'
        return [t, other]

    idle = _graphs()
    idle.gather(all_gather)
    assert idle.update() == 2
    assert idle.has_generated.tolist() == [True, False, True]
    assert idle.neighbours[0].tolist() == [[1, 2], [-1, -1], [3, -1]]
    assert idle.neighbours[1].tolist() == [[0, 1], [-1, -1], [2, 3]]


def test_gather_on_an_idle_rank_makes_its_empty_share_on_the_module_device():
    """A store on another device than the default one (here ``meta``) with nothing pending
    sends empty tensors on its own device, so the gathered pending state is the other
    rank's, on that device."""
    busy = _graphs()
    busy.collect(torch.tensor([0, 2]), [torch.tensor([[1, 2], [3, -1]]),
                                        torch.tensor([[0, 1], [2, 3]])])
    it = iter([t.to(META) for t in _sent_by(busy)])
    idle = _graphs().to(META)
    idle.gather(lambda t: [t, next(it)])
    (users, idx), = idle.pending
    assert users.device == META and users.shape == (2,) and users.dtype == torch.long
    for n in idx:
        assert n.device == META and n.shape == (2, K) and n.dtype == torch.int32


# --------------------------------------------------------------------------- load_state
def test_load_state_puts_the_pending_neighbours_on_the_module_device():
    """A checkpoint's pending neighbours (saved on the CPU) are loaded onto the store's
    device."""
    saved = _graphs()
    saved.collect(torch.tensor([1]), [torch.tensor([[0, 1]]), torch.tensor([[2, 3]])])
    state = saved.state()
    assert state['has_generated'] is None and state['pending'] is not None
    g = _graphs().to(META)
    g.load_state(state)
    (users, idx), = g.pending
    assert users.device == META and users.shape == (1,)
    assert [n.device for n in idx] == [META, META]
    assert [tuple(n.shape) for n in idx] == [(1, K), (1, K)]


def test_load_state_puts_the_swapped_in_neighbours_on_the_module_device(monkeypatch):
    """A checkpoint's swapped-in neighbours (saved on the CPU) are copied onto the store's
    device. The adjacencies cannot be built on ``meta`` (no sparse kernels there), so the
    rebuild that follows the load is skipped: this checks the stored state only."""
    saved = _graphs()
    saved.collect(torch.tensor([0, 2]), [torch.tensor([[1, 2], [3, -1]]),
                                         torch.tensor([[0, 1], [2, 3]])])
    saved.update()
    state = saved.state()
    g = _graphs().to(META)
    monkeypatch.setattr(g, 'rebuild', lambda: None)
    g.load_state(state)
    assert g.has_generated.device == META and g.has_generated.shape == (NUM_USERS,)
    assert g.has_generated.dtype == torch.bool
    for n in g.neighbours:
        assert n.device == META and n.shape == (NUM_USERS, K) and n.dtype == torch.int32


# --------------------------------------------------------------------------- _apply
def test_double_converts_the_modality_adjacencies():
    """``Module.double()`` reaches every submodule: the training graph's and the swapped-in
    graphs' edge weights become float64 with the same values; the neighbour state (bool,
    int32) is not floating point and keeps its dtype."""
    g = _graphs()
    g.collect(torch.tensor([0, 2]), [torch.tensor([[1, 2], [3, -1]]),
                                     torch.tensor([[0, 1], [2, 3]])])
    g.update()
    before = {name: buf.clone() for name, buf in g.named_buffers()}
    assert any(b.dtype == torch.float32 for b in before.values())
    g.double()
    after = dict(g.named_buffers())
    assert after.keys() == before.keys()
    for name, buf in after.items():
        want = torch.float64 if before[name].is_floating_point() else before[name].dtype
        assert buf.dtype == want, name
        assert torch.equal(buf, before[name].to(want)), name
    assert g.has_generated.dtype == torch.bool
    assert [n.dtype for n in g.neighbours] == [torch.int32, torch.int32]


def test_to_empty_without_recurse_leaves_the_adjacencies():
    """``to_empty(recurse=False)`` re-makes only the store's own buffer (the training
    edges), not the tensors of its submodules (the adjacencies)."""
    g = _graphs()
    own = g.train_edge_index
    children = {name: buf for name, buf in g.initial.named_buffers()}
    g.to_empty(device='cpu', recurse=False)
    assert g.train_edge_index is not own and g.train_edge_index.shape == own.shape
    for name, buf in g.initial.named_buffers():
        assert buf is children[name], name
