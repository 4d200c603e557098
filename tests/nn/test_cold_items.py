"""The cold-item option of Eq. 2 (``cold_items``, issue 15): items without training
interactions get their own projected features instead of a zero :math:`\\mathbf{i}^m`.
Expected values are computed by hand or from the paper's formula."""
import pytest
import torch
import torch.nn.functional as F

from mmssl_pyg.data.graph import RecGraph
from mmssl_pyg.models.mmssl import MMSSL
from mmssl_pyg.nn.encoder import cold_item_modal


def test_cold_item_modal_by_hand():
    item_m = [torch.tensor([[3.0, 4.0], [0.0, 0.0], [0.0, 1.0]])]  # item 1 is cold
    feats = [torch.tensor([[9.0, 9.0], [0.0, -2.0], [7.0, 7.0]])]
    cold = torch.tensor([1])
    assert torch.equal(cold_item_modal(item_m, feats, cold, 'none')[0], item_m[0])
    out = cold_item_modal(item_m, feats, cold, 'features')[0]
    # warm rows untouched; the cold row is unit(F_1) = (0, -1) times the warm mean length 3
    assert torch.equal(out[[0, 2]], item_m[0][[0, 2]])
    assert torch.allclose(out[1], torch.tensor([0.0, -3.0]))
    # no cold item: the input itself
    assert cold_item_modal(item_m, feats, torch.tensor([], dtype=torch.long), 'features')[0] \
        is item_m[0]
    # the warm mean counts only warm rows, even when a cold row is not zero on input
    item_m2 = [torch.tensor([[6.0, 8.0], [1.0, 0.0], [0.0, 0.0]])]  # one warm item: length 10
    out2 = cold_item_modal(item_m2, feats, torch.tensor([1, 2]), 'features')[0]
    assert torch.allclose(out2[1:], torch.tensor([[0.0, -10.0], [10 / 2 ** 0.5, 10 / 2 ** 0.5]]))
    # every item cold: no warm length, so no content (zeros), not a division by zero
    out3 = cold_item_modal(item_m2, feats, torch.tensor([0, 1, 2]), 'features')[0]
    assert torch.equal(out3, torch.zeros(3, 2))


def test_cold_item_features_carry_gradients_to_the_projection_only():
    feats = [torch.tensor([[1.0, 0.0], [0.0, 2.0]], requires_grad=True)]
    item_m = [torch.tensor([[0.0, 0.0], [3.0, 4.0]], requires_grad=True)]  # item 0 cold
    out = cold_item_modal(item_m, feats, torch.tensor([0]), 'features')[0]
    out[0].sum().backward()
    assert feats[0].grad[0].abs().sum() > 0 and feats[0].grad[1].abs().sum() == 0
    assert item_m[0].grad.abs().sum() == 0  # the warm length is a detached scale


def _graph_with_cold_items():
    g = torch.Generator().manual_seed(0)
    users = torch.arange(12).repeat_interleave(3)
    items = torch.randint(0, 8, (users.numel(),), generator=g)  # items 8 and 9 never trained
    ei = torch.stack([users, items])
    feats = {'image': torch.rand(10, 5, generator=g), 'audio': torch.rand(10, 4, generator=g)}
    test = torch.tensor([[0, 1], [8, 9]])
    return RecGraph(12, 10, ei, ei[:, :6], test, feats, 'toy')


def test_mmssl_cold_items_reach_the_generator_and_eq12():
    graph = _graph_with_cold_items()
    embs = {}
    for mode in ('none', 'features'):
        torch.manual_seed(0)
        model = MMSSL(graph, embedding_dim=8, num_heads=2, topk_rate=0.5, cold_items=mode)
        assert model.cold_index.tolist() == [8, 9]
        embs[mode] = model.eval().encode()
    paper, cold = embs['none'], embs['features']
    for m in range(2):
        assert torch.equal(paper.item_modal[m][8:], torch.zeros(2, 8))  # the paper: zero
        assert torch.equal(cold.item_modal[m][:8], paper.item_modal[m][:8])
        length = paper.item_modal[m][:8].norm(dim=1).mean()
        expected = F.normalize(paper.features[m][8:], dim=1) * length
        assert torch.allclose(cold.item_modal[m][8:], expected, atol=1e-6)
    # Eq. 12: the paper gives cold items no content; the option gives them their features
    assert not torch.allclose(cold.item[8:], paper.item[8:])
    assert torch.equal(cold.item[:8], paper.item[:8])
    # Eq. 3's scores <u^m, i^m>: the same 0 for every user in the paper (cold items carry no
    # modality signal and rank only against the sign of the warm scores), user-dependent here
    for m in range(2):
        assert torch.equal(paper.user_modal[m] @ paper.item_modal[m][8:].t(), torch.zeros(12, 2))
        scores = cold.user_modal[m] @ cold.item_modal[m][8:].t()
        assert scores.std(dim=0).min() > 0


def test_cold_items_option_is_checked():
    with pytest.raises(ValueError, match=r"^MMSSL: option 'cold_items' expects one of none, "
                                         r"features, got 'all'$"):
        MMSSL(_graph_with_cold_items(), embedding_dim=8, num_heads=2, cold_items='all')


def test_cold_items_option_in_the_options_table():
    from mmssl_pyg.training.options import ConfigError
    from mmssl_pyg.training.presets import resolve_options
    with pytest.raises(ConfigError, match="cold_items"):
        resolve_options(MMSSL, 'tiktok', overrides=['cold_items=all'])
    opts = resolve_options(MMSSL, 'tiktok', overrides=['cold_items=features'])
    assert opts.model_kwargs['cold_items'] == 'features'
