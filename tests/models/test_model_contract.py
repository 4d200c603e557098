"""The contract every registered model keeps (mmssl_pyg/models/base.py): shapes of
``get_embedding``, ``repr``, the loss dictionary, a state_dict round trip and ``recommend``."""
from __future__ import annotations

import pytest
import torch
from conftest import tiny_batch

from mmssl_pyg.models import MODELS
from mmssl_pyg.training import from_preset

#: small sizes so every model builds in milliseconds (options of the model's own signature)
SMALL = {'embedding_dim': 8, 'knn_k': 4, 'num_heads': 2, 'topk_rate': 0.1}


def _build(name: str, graph, seed: int = 0):
    import inspect
    cls = MODELS[name]
    takes = inspect.signature(cls.__init__).parameters
    torch.manual_seed(seed)
    return cls(graph, **{k: v for k, v in SMALL.items() if k in takes})


@pytest.mark.parametrize('name', sorted(MODELS))
def test_every_model_keeps_the_contract(name, tiny_graph):
    graph = tiny_graph
    model = _build(name, graph)
    assert repr(model).startswith(type(model).__name__)
    model.eval()
    with torch.no_grad():
        user, item = model.get_embedding()
    assert user.shape[0] == graph.num_users and item.shape[0] == graph.num_items
    assert user.dim() == item.dim() == 2 and user.shape[1] == item.shape[1]
    assert torch.isfinite(user).all() and torch.isfinite(item).all()

    if getattr(model, 'trainable', True):
        model.train()
        batch = tiny_batch(graph)
        if model.has_critic:
            critic = model.critic_loss(batch)
            assert critic['loss'].dim() == 0 and torch.isfinite(critic['loss'])
        out = model.loss(batch)
        assert 'loss' in out and out['loss'].dim() == 0 and torch.isfinite(out['loss'])
        out['loss'].backward()
        assert any(p.grad is not None for p in model.model_parameters())
        model.on_epoch_end(1)

    # state_dict round trip: a fresh model (other seed) given the state scores alike
    other = _build(name, graph, seed=1)
    other.load_state_dict(model.state_dict())
    model.eval()
    other.eval()
    with torch.no_grad():
        a, b = model.get_embedding(), other.get_embedding()
    assert torch.allclose(a[0], b[0]) and torch.allclose(a[1], b[1])

    users = torch.tensor([0, 3, 5])
    rowptr, col = graph.train_rows()
    with torch.no_grad():
        top, scores = model.recommend(users, k=4, exclude_rowptr=rowptr, exclude_col=col,
                                      return_scores=True)
    assert top.shape == scores.shape == (3, 4)
    for r, u in enumerate(users.tolist()):
        seen = set(col[rowptr[u]:rowptr[u + 1]].tolist())
        assert not seen & set(top[r].tolist())  # training items are excluded
        assert torch.all(scores[r, :-1] >= scores[r, 1:])  # best first


# --------------------------------------------------------------------------- one default per name
class _Built(BaseException):
    """Stops a command (or a call) once the model's keyword arguments are known."""


def _constructor_kwargs(monkeypatch, cls, build) -> dict:
    """The keyword arguments ``build()`` hands to ``cls``'s constructor (the spy keeps the
    constructor's signature: the option checks read it, and cache what they read)."""
    import functools
    seen = {}

    @functools.wraps(cls.__init__)
    def spy(self, graph, **kwargs):
        seen.update(kwargs)
        raise _Built

    with monkeypatch.context() as patch:
        patch.setattr(cls, '__init__', spy)
        with pytest.raises(_Built):
            build()
    return seen


@pytest.fixture(scope='module')
def no_block_dataset(tmp_path_factory):
    """TikTok-mini's files under a name no preset has a block for."""
    import shutil
    from pathlib import Path
    folder = tmp_path_factory.mktemp('from-preset') / 'my-data'
    shutil.copytree(Path(__file__).resolve().parents[2] / 'datasets' / 'tiktok-mini' / 'raw',
                    folder / 'raw')
    return str(folder)


@pytest.mark.parametrize('where', ['tiktok', 'no block'])
@pytest.mark.parametrize('name', sorted(MODELS))
def test_from_preset_builds_what_the_command_line_builds(name, where, monkeypatch, tmp_path,
                                                         no_block_dataset):
    """``from_preset(name, graph, dataset)`` and ``mmssl-pyg train --model <name> --dataset
    <dataset>`` give the constructor the same options: on TikTok (a preset block) and on a
    dataset without a block (the preset's default)."""
    from mmssl_pyg import cli
    from mmssl_pyg.training.run import load_graph
    cls = MODELS[name]
    dataset = 'tiktok' if where == 'tiktok' else no_block_dataset
    graph = load_graph(dataset)
    command = _constructor_kwargs(monkeypatch, cls, lambda: cli.main(
        ['train', '--model', name, '--dataset', dataset, '--device', 'cpu',
         '--wandb', 'disabled', '--run-dir', str(tmp_path / 'run')]))
    python = _constructor_kwargs(monkeypatch, cls, lambda: from_preset(name, graph, dataset))
    assert python == command
    assert not (tmp_path / 'run').exists()
    if name == 'mmssl':  # the preset, not the constructor's (the paper's) values
        assert python['num_layers'] == 3 and python['fusion_scale'] == 'relative'


def test_from_preset_takes_a_class_or_a_name_and_overrides(tiny_graph):
    from mmssl_pyg.models import MMSSL
    model = from_preset(MMSSL, tiny_graph, 'tiktok', embedding_dim=8, num_heads=2)
    assert (model.num_layers, model.fusion_scale, model.embedding_dim) == (3, 'relative', 8)
    assert model.gumbel_temperature == 0.002  # the TikTok block
    paper = from_preset('mmssl-paper', tiny_graph, 'tiktok', embedding_dim=8, num_heads=2)
    assert (paper.num_layers, paper.fusion_scale) == (2, 'unit')
    bare = MMSSL(tiny_graph, embedding_dim=8, num_heads=2)  # the constructor: the paper's
    assert (bare.num_layers, bare.fusion_scale, bare.cl_weight) == (2, 'unit', 0.03)
