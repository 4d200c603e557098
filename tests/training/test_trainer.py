"""Tests of ``mmssl_pyg/training/trainer.py``.

MMSSL's speed options: the deferred top-k search (exact), the subsampled gradient penalty
(``gp_samples``) and the critic schedule (``critic_every``).

Mixed precision (``TrainConfig.precision``) as far as a CPU can test it: bf16 autocast
trains, fp16 is refused with the fix, and the critic's gradient penalty stays float32.

Adversarial runs, round two (issue 26): a refused command changes nothing, the run-folder
lock is atomic, options mean what was typed, the Python API checks its arguments, and a run
leaves nothing outside its run folder.

The shared trainer: determinism, critic steps, early stopping, NaN handling, resume."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from mmssl_pyg.models import MMSSL, LightGCN, get_model_class
from mmssl_pyg.testing import FAST as SPEED_FAST
from mmssl_pyg.testing import FAST_adversarial as ADV_FAST
from mmssl_pyg.testing import _fit as _speed_fit
from mmssl_pyg.testing import (
    assert_user_error,
    run_cli,
    synthetic_graph,
    write_json_dataset,
)
from mmssl_pyg.testing import graph_criticcolumns as _graph
from mmssl_pyg.training import (
    MemoryTracker,
    NonFiniteLossError,
    TrainConfig,
    Trainer,
    load_checkpoint,
    resolve_device,
)
from mmssl_pyg.training import trainer as trainer_module
from mmssl_pyg.training.options import ConfigError


@pytest.fixture(scope='module')
def tiny(tmp_path_factory) -> Path:
    """An ID-only dataset of 40 users and 60 items."""
    return write_json_dataset(tmp_path_factory.mktemp('tiny') / 'tiny', num_users=40,
                              num_items=60, per_user=6)


@pytest.fixture(scope='module')
def model_and_graph(tiny):
    from mmssl_pyg.training.run import load_graph
    graph = load_graph(str(tiny))
    return get_model_class('lightgcn')(graph, embedding_dim=8), graph


FAST = dict(batch_size=16, progress=False, seed=7, ks=(10, 20), num_threads=1)


def _fit(epochs=2, checkpoint_dir=None, model_seed=0, resume=False, model_cls=LightGCN,
         tracker=None, **cfg):
    graph = synthetic_graph()
    torch.manual_seed(model_seed)
    model = model_cls(graph, embedding_dim=8)
    config = TrainConfig(**{**FAST, 'epochs': epochs, **cfg})
    trainer = Trainer(model, graph, config, tracker=tracker, checkpoint_dir=checkpoint_dir)
    return trainer.fit(resume=resume), trainer


class _NaNLightGCN(LightGCN):
    """Its BPR term turns NaN at epoch ``nan_epoch`` (2), batch index 1."""
    nan_epoch = 2

    def on_epoch_start(self, epoch):
        self._epoch, self._batch = epoch, 0

    def loss(self, batch):
        out = super().loss(batch)
        if self._epoch == self.nan_epoch and self._batch == 1:
            out['bpr'] = out['bpr'] * float('nan')
            out['loss'] = out['bpr'] + out['reg']
        self._batch += 1
        return out


class _CriticLightGCN(LightGCN):
    """A toy adversarial model: a linear critic on the batch users' embeddings."""
    has_critic = True

    def __init__(self, graph, embedding_dim=8):
        super().__init__(graph, embedding_dim=embedding_dim)
        self.critic = torch.nn.Linear(embedding_dim, 1)
        self.calls = []

    def critic_parameters(self):
        return list(self.critic.parameters())

    def critic_loss(self, batch):
        self.calls.append('critic')
        batch.cache['seen_by_critic'] = True
        real = self.critic(self.item_emb(batch.pos)).mean()
        fake = self.critic(self.item_emb(batch.neg)).mean()
        return {'loss': fake - real, 'real': real, 'fake': fake}

    def loss(self, batch):
        self.calls.append('model' if batch.cache.get('seen_by_critic') else 'model-no-cache')
        out = super().loss(batch)
        gen = -self.critic(self.item_emb(batch.neg)).mean()
        out['generator'] = gen
        out['loss'] = out['loss'] + 1e-3 * gen
        return out


def _scripted_evaluate(values, calls=None):
    """An ``evaluate`` whose validation metric is the next of ``values`` (test: -1)."""
    it = iter(values)

    def fake_evaluate(model, graph, split, ks, **kwargs):
        if calls is not None:
            calls.append((split, kwargs))
        value = next(it) if split == 'val' else -1.0
        return {f'{m}@{k}': value for k in ks for m in ('recall', 'precision', 'ndcg', 'hit')}
    return fake_evaluate


class _RecordingLightGCN(LightGCN):
    """Records each epoch's batches (users, positives, negatives)."""

    def __init__(self, graph, embedding_dim=8):
        super().__init__(graph, embedding_dim=embedding_dim)
        self.epochs = []

    def on_epoch_start(self, epoch):
        self.epochs.append([])

    def loss(self, batch):
        self.epochs[-1].append(torch.stack([batch.users, batch.pos, batch.neg]).clone())
        return super().loss(batch)


class _FixedScores(torch.nn.Module):
    """Hand-set embeddings, no parameters (the trainer runs one epoch without batches)."""
    trainable = False
    has_critic = False

    def __init__(self, user_emb, item_emb):
        super().__init__()
        self.register_buffer('u', user_emb)
        self.register_buffer('i', item_emb)

    def model_parameters(self):
        return []

    def on_epoch_start(self, epoch):
        pass

    def on_epoch_end(self, epoch):
        pass

    def get_embedding(self):
        return self.u, self.i


def test_final_marks_each_users_last_batch_of_the_epoch():
    graph = _graph()
    torch.manual_seed(0)
    model = MMSSL(graph, embedding_dim=8, num_heads=2, topk_rate=0.1)
    trainer = Trainer(model, graph, TrainConfig(**{**SPEED_FAST, 'batches_per_epoch': 7}))
    state = trainer.sampler.state_dict()
    batches = trainer._draw_epoch(7)
    trainer.sampler.load_state_dict(state)
    again = [trainer.sampler.sample() for _ in range(7)]  # the same stream, one at a time
    assert all(torch.equal(a.users, b.users) and torch.equal(a.neg, b.neg)
               for a, b in zip(batches, again))
    for i, b in enumerate(batches):
        later = set().union(*[set(x.users.tolist()) for x in batches[i + 1:]])
        expected = torch.tensor([u not in later for u in b.users.tolist()])
        assert torch.equal(b.final, expected)
    # every drawn user is final exactly once
    finals = torch.cat([b.users[b.final] for b in batches])
    assert sorted(finals.tolist()) == sorted(set(torch.cat([b.users for b in batches]).tolist()))


def test_critic_every_runs_the_critic_on_every_kth_batch_of_the_run(monkeypatch):
    graph = _graph()
    calls = []
    original = MMSSL.critic_loss

    def spy(self, batch):
        out = original(self, batch)
        calls.append(float(out['loss']))
        return out

    monkeypatch.setattr(MMSSL, 'critic_loss', spy)
    result, _, _ = _speed_fit(graph, epochs=2, batches_per_epoch=4, critic_every=3)
    # global steps 0..7: the critic runs at 0, 3 (epoch 1) and 6 (epoch 2)
    assert len(calls) == 3
    h1, h2 = result.history
    assert math.isclose(h1['train/critic_loss'], (calls[0] + calls[1]) / 2, rel_tol=1e-6)
    assert math.isclose(h2['train/critic_loss'], calls[2], rel_tol=1e-6)
    assert 'train/generator' in h1  # L_G still enters every model step
    calls.clear()
    _speed_fit(graph, epochs=1, batches_per_epoch=4)
    assert len(calls) == 4  # default: every batch, as in the paper


def test_mmssl_trains_with_bf16_autocast_on_cpu():
    graph = _graph()
    torch.manual_seed(0)
    model = MMSSL(graph, embedding_dim=8, num_heads=2, topk_rate=0.1)
    cfg = TrainConfig(batch_size=8, batches_per_epoch=2, epochs=1, precision='bf16',
                      device='cpu', progress=False, ks=(10, 20))
    trainer = Trainer(model, graph, cfg)
    assert trainer.amp_dtype == torch.bfloat16 and trainer.scaler is None
    # output dtypes of linear layers, by whether the model was training (autocast) or not
    seen = {}
    layers = {'feature projection': model.generator.lins[0], 'attention': model.attention.out,
              'critic': model.critic.lin2}
    hooks = [layer.register_forward_hook(
        lambda mod, inp, out, name=name: seen.setdefault((name, model.training), set()).add(
            out.dtype)) for name, layer in layers.items()]
    try:
        result = trainer.fit()
    finally:
        for hook in hooks:
            hook.remove()
    # the training steps ran under bf16 autocast: the linear layers produced bfloat16 ...
    assert seen[('feature projection', True)] == {torch.bfloat16}
    assert seen[('attention', True)] == {torch.bfloat16}
    # ... except inside the gradient penalty, which runs the critic head in float32
    assert seen[('critic', True)] == {torch.bfloat16, torch.float32}
    # evaluation (eval mode) stays float32
    assert seen[('feature projection', False)] == {torch.float32}
    assert seen[('attention', False)] == {torch.float32}
    h = result.history[0]
    assert all(torch.isfinite(torch.tensor(v)) for k, v in h.items() if k.startswith('train/'))
    assert h['train/critic_gradient_penalty'] > 0
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay float32


def test_fp16_on_cpu_is_refused_with_the_fix():
    graph = _graph()
    torch.manual_seed(0)
    model = MMSSL(graph, embedding_dim=8, num_heads=2, topk_rate=0.1)
    with pytest.raises(ConfigError, match='fp16 needs a CUDA GPU.*bf16'):
        Trainer(model, graph, TrainConfig(precision='fp16', device='cpu', progress=False))
    with pytest.raises(ConfigError, match='precision'):
        TrainConfig(precision='fp8')
    assert TrainConfig().precision == 'fp32'


def test_trainer_refuses_a_model_built_on_another_graph(model_and_graph, tmp_path):
    from mmssl_pyg.training import Trainer
    from mmssl_pyg.training.run import load_graph
    model, _ = model_and_graph
    other = load_graph(str(write_json_dataset(tmp_path / 'other', num_users=40, num_items=60,
                                              per_user=6, seed=1)))
    with pytest.raises(ValueError, match='built on another graph'):
        Trainer(model, other)


@pytest.mark.parametrize('error', [
    RuntimeError('[enforce fail at alloc_cpu.cpp:121] data. DefaultCPUAllocator: not enough '
                  'memory: you tried to allocate 123456789012 bytes.'),
    torch.OutOfMemoryError('CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.10 GiB '
                           'total capacity; 77.00 GiB already allocated)'),
], ids=['cpu-allocator', 'cuda-allocator'])
def test_allocator_failure_is_one_line_with_a_fix(error, tiny, tmp_path, capsys, monkeypatch):
    from mmssl_pyg.training.trainer import Trainer

    def fit(self, resume=False, test=True):
        raise error

    monkeypatch.setattr(Trainer, 'fit', fit)
    code, _, err = run_cli(['train', '--dataset', tiny, '--run-dir', tmp_path / 'run', *ADV_FAST],
                           capsys)
    assert_user_error(code, err, 'out of memory', 'tried to allocate', 'batch_size', 'Fix:')
    assert 'enforce fail' not in err and 'MMSSL_PYG_DEBUG' not in err


def test_trainer_refuses_cutoffs_beyond_the_items_before_training(model_and_graph):
    from mmssl_pyg.training import TrainConfig, Trainer
    model, graph = model_and_graph
    with pytest.raises(ConfigError, match='exceed the number of items'):
        Trainer(model, graph, TrainConfig(ks=(20, 10**6)))


def test_same_seed_gives_same_losses_and_metrics():
    # CPU: CUDA's scatter/sparse kernels are not bitwise deterministic
    a, _ = _fit(device='cpu')
    b, _ = _fit(device='cpu')
    strip = [{k: v for k, v in h.items() if 'seconds' not in k and 'memory' not in k}
             for h in a.history]
    assert strip == [{k: v for k, v in h.items() if 'seconds' not in k and 'memory' not in k}
                     for h in b.history]
    assert a.test == b.test and a.val == b.val and a.best_epoch == b.best_epoch
    c, _ = _fit(seed=8, device='cpu')
    assert c.history[0]['train/loss'] != a.history[0]['train/loss']


def test_history_and_result_contents():
    tracker = MemoryTracker()
    result, trainer = _fit(epochs=3, eval_every=2, tracker=tracker)
    assert [h['epoch'] for h in result.history] == [1, 2, 3]
    first, second, third = result.history
    assert 'val/recall@20' not in first and 'eval_seconds' not in first  # eval_every=2
    assert 'val/recall@20' in second and 'val/recall@20' in third       # and the last epoch
    for h in result.history:
        assert {'train/loss', 'train/bpr', 'train/reg', 'epoch_seconds',
                'peak_memory_mb'} <= set(h)
        assert h['epoch_seconds'] > 0 and h['peak_memory_mb'] > 0
    best = max((2, 3), key=lambda e: result.history[e - 1]['val/recall@20'])
    assert result.best_epoch == best
    assert result.val == {k[4:]: v for k, v in result.history[best - 1].items()
                          if k.startswith('val/')}
    assert set(result.test) == {f'{m}@{k}' for k in (10, 20)
                                for m in ('recall', 'precision', 'ndcg', 'hit')}
    assert [s for s, _ in tracker.history] == [1, 2, 3]
    assert tracker.summary_['best_epoch'] == best and 'test/recall@20' in tracker.summary_
    assert tracker.config['train']['lr'] == 1e-3
    # the sampler's epoch length is ceil(|train| / batch_size) batches
    assert len(trainer.sampler) == math.ceil(trainer.graph.num_train / 16)
    assert trainer.device == resolve_device('auto') == torch.device(
        'cuda' if torch.cuda.is_available() else 'cpu')


def test_fit_result_to_dict_is_plain():
    from mmssl_pyg.training.trainer import FitResult
    history = [{'epoch': 1, 'train/loss': 0.5}]
    result = FitResult(1, {'recall@20': 0.25}, {'recall@20': 0.2}, history, True,
                       Path('runs') / 'x', 3)
    assert result.to_dict() == {'best_epoch': 1, 'val': {'recall@20': 0.25},
                                'test': {'recall@20': 0.2}, 'stopped_early': True,
                                'history': history, 'resumed_from_epoch': 3,
                                'checkpoint_dir': str(Path('runs') / 'x')}
    assert FitResult(2, {}, {}).to_dict() == {
        'best_epoch': 2, 'val': {}, 'test': {}, 'stopped_early': False, 'history': [],
        'resumed_from_epoch': None, 'checkpoint_dir': None}


#: The trainer's error when validation Recall@20 was never a number in 3 evaluations.
NEVER_A_NUMBER_AFTER_3 = ('validation recall@20 was not a number at any of the 3 evaluation(s) '
                          '(nan at the last), so no epoch can be selected to test; check that '
                          "the model's embeddings are finite")


def test_a_run_whose_validation_metric_is_never_a_number_says_so_instead_of_testing(
        monkeypatch):
    # NaN never compares greater than the starting best (-inf), so no epoch is selected; the
    # error names the metric, how many evaluations there were and the last value.
    nan = float('nan')
    monkeypatch.setattr(trainer_module, 'evaluate',
                        lambda *a, **kw: {'recall@10': nan, 'recall@20': nan})
    graph = synthetic_graph()
    trainer = Trainer(LightGCN(graph, embedding_dim=8), graph,
                      TrainConfig(**{**FAST, 'epochs': 3, 'patience': 0}))
    with pytest.raises(RuntimeError) as err:
        trainer.fit()
    assert trainer.best_epoch == 0 and len(trainer.history) == 3
    assert str(err.value) == NEVER_A_NUMBER_AFTER_3


def test_the_never_a_number_error_quotes_the_last_evaluation():
    # -inf does not compare greater than the starting best either; the message counts the
    # evaluations (records without the metric are not evaluations) and quotes the last one,
    # here NaN after two -inf (the first and the second-to-last value are -inf)
    graph = synthetic_graph()
    trainer = Trainer(LightGCN(graph, embedding_dim=8), graph, TrainConfig(**FAST))
    inf = float('inf')
    trainer.history = [{'epoch': 1, 'val/recall@20': -inf}, {'epoch': 2},
                       {'epoch': 3, 'val/recall@20': -inf},
                       {'epoch': 4, 'val/recall@20': float('nan')}]
    with pytest.raises(RuntimeError) as err:
        trainer._test_best()
    assert str(err.value) == NEVER_A_NUMBER_AFTER_3


def test_a_trainer_that_never_validated_has_no_best_epoch_to_test():
    graph = synthetic_graph()
    trainer = Trainer(LightGCN(graph, embedding_dim=8), graph, TrainConfig(**FAST))
    with pytest.raises(RuntimeError) as err:
        trainer._test_best()
    assert str(err.value) == ('no validation evaluation took place, so there is no best epoch '
                              'to test (epochs must be >= 1)')


def test_early_stopping_selects_on_validation_and_tests_once(monkeypatch, tmp_path):
    calls = []
    scripted = iter([0.1, 0.3, 0.2, 0.25, 0.9])  # best at epoch 2, patience 2 stops at 4

    def fake_evaluate(model, graph, split, ks, **kwargs):
        calls.append((split, model.user_emb.weight.detach().cpu().clone()))
        value = next(scripted) if split == 'val' else -1.0
        return {f'{m}@{k}': value for k in ks for m in ('recall', 'precision', 'ndcg', 'hit')}

    monkeypatch.setattr(trainer_module, 'evaluate', fake_evaluate)
    result, trainer = _fit(epochs=10, patience=2, checkpoint_dir=tmp_path)
    assert result.stopped_early and len(result.history) == 4
    assert result.best_epoch == 2 and result.val['recall@20'] == 0.3
    assert [s for s, _ in calls] == ['val'] * 4 + ['test']
    best = load_checkpoint(tmp_path / 'best.pt')
    assert best['epoch'] == 2 and load_checkpoint(tmp_path / 'last.pt')['epoch'] == 4
    # the test split saw the best epoch's weights, reloaded from best.pt
    assert torch.equal(calls[-1][1], best['model']['user_emb.weight'])
    assert torch.equal(calls[1][1], calls[-1][1])


def test_best_weights_kept_in_memory_without_checkpoint_dir(monkeypatch):
    seen = []
    scripted = iter([0.5, 0.1])

    def fake_evaluate(model, graph, split, ks, **kwargs):
        seen.append(model.user_emb.weight.detach().cpu().clone())
        value = next(scripted) if split == 'val' else 0.0
        return {f'{m}@{k}': value for k in ks for m in ('recall', 'precision', 'ndcg', 'hit')}

    monkeypatch.setattr(trainer_module, 'evaluate', fake_evaluate)
    result, _ = _fit(epochs=2)
    assert result.best_epoch == 1 and torch.equal(seen[-1], seen[0])


def test_non_finite_loss_stops_with_term_epoch_and_batch(tmp_path):
    with pytest.raises(NonFiniteLossError) as info:
        _fit(epochs=3, checkpoint_dir=tmp_path, model_cls=_NaNLightGCN)
    msg = str(info.value)
    assert "'bpr'" in msg and 'epoch 2' in msg and 'batch index 1' in msg
    assert 'last.pt' in msg
    last = load_checkpoint(tmp_path / 'last.pt')  # the last good checkpoint, intact
    assert last['epoch'] == 1
    assert all(torch.isfinite(v).all() for v in last['model'].values() if v.is_floating_point())
    assert not list(tmp_path.glob('*.tmp'))


def test_critic_step_precedes_model_step_with_separate_optimisers():
    result, trainer = _fit(epochs=1, model_cls=_CriticLightGCN)
    model = trainer.model
    n = len(trainer.sampler)
    assert model.calls == ['critic', 'model'] * n
    crit = trainer.critic_optimizer
    assert isinstance(crit, torch.optim.Adam) and not isinstance(crit, torch.optim.AdamW)
    assert crit.defaults['lr'] == 3e-4 and crit.defaults['betas'] == (0.5, 0.9)
    assert isinstance(trainer.optimizer, torch.optim.AdamW)
    assert trainer.optimizer.defaults['weight_decay'] == 0.0
    critic_ids = {id(p) for p in model.critic.parameters()}
    assert {id(p) for g in crit.param_groups for p in g['params']} == critic_ids
    assert not critic_ids & {id(p) for g in trainer.optimizer.param_groups for p in g['params']}
    h = result.history[0]
    assert {'train/critic_loss', 'train/critic_real', 'train/critic_fake',
            'train/generator', 'train/loss', 'train/bpr'} <= set(h)
    assert h['train/critic_loss'] == pytest.approx(h['train/critic_fake'] - h['train/critic_real'])


def test_resume_in_process_matches_uninterrupted_run(tmp_path):
    kw = dict(model_cls=_CriticLightGCN, device='cpu')
    full, _ = _fit(epochs=4, checkpoint_dir=tmp_path / 'full', **kw)
    _fit(epochs=2, checkpoint_dir=tmp_path / 'cut', **kw)
    # a fresh process would rebuild the model from another state: the checkpoint restores it
    resumed, _ = _fit(epochs=4, checkpoint_dir=tmp_path / 'cut', model_seed=123, resume=True,
                      **kw)

    def strip(history):
        return [{k: v for k, v in h.items() if 'seconds' not in k and 'memory' not in k}
                for h in history]

    assert strip(resumed.history) == strip(full.history)
    assert resumed.test == full.test and resumed.best_epoch == full.best_epoch


def test_resume_repairs_best_checkpoint_killed_before_it_was_written(tmp_path):
    _fit(epochs=1, checkpoint_dir=tmp_path)
    (tmp_path / 'best.pt').unlink()  # died between writing last.pt and best.pt
    result, _ = _fit(epochs=1, checkpoint_dir=tmp_path, resume=True)
    assert result.best_epoch == 1 and load_checkpoint(tmp_path / 'best.pt')['epoch'] == 1


def test_bad_config_values_name_the_field():
    with pytest.raises(ValueError, match='batch_size'):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match='metric'):
        TrainConfig(metric='recall@25')
    with pytest.raises(ValueError, match='device'):
        TrainConfig(device='gpu')


def test_early_stopping_keeps_the_first_maximum_and_stops_after_patience(monkeypatch):
    # epoch 2 is the best; epoch 3 ties it (not an improvement), epoch 4 is worse: two
    # evaluations without improvement = patience 2, so epoch 5 (0.9) never runs
    monkeypatch.setattr(trainer_module, 'evaluate', _scripted_evaluate([0.1, 0.3, 0.3, 0.2, 0.9]))
    result, trainer = _fit(epochs=10, patience=2)
    assert [h['epoch'] for h in result.history] == [1, 2, 3, 4]
    assert result.stopped_early and result.best_epoch == 2 and trainer.bad_evals == 2
    assert result.val['recall@20'] == 0.3


def test_every_epoch_draws_new_batches():
    _, trainer = _fit(epochs=3, model_cls=_RecordingLightGCN)
    epochs = trainer.model.epochs
    n = len(trainer.sampler)
    assert [len(e) for e in epochs] == [n] * 3
    for a, b in ((0, 1), (1, 2), (0, 2)):
        assert not torch.equal(torch.cat(epochs[a], 1), torch.cat(epochs[b], 1))
    # and they are the sampler's stream: a fresh sampler with the seed draws them in order
    from mmssl_pyg.training import BPRSampler
    fresh = BPRSampler(trainer.graph.to('cpu'), FAST['batch_size'], seed=FAST['seed'])
    for epoch in epochs:
        for got in epoch:
            b = fresh.sample()
            assert torch.equal(got.cpu(), torch.stack([b.users, b.pos, b.neg]))


def test_optimiser_steps_every_trainable_parameter_including_1d_ones():
    from mmssl_pyg.models.lattice import LATTICE
    from mmssl_pyg.testing import make_tiny_graph
    graph = make_tiny_graph(2)
    torch.manual_seed(0)
    model = LATTICE(graph, embedding_dim=8, feat_embed_dim=8, knn_k=3)
    one_d = [n for n, p in model.named_parameters() if p.dim() == 1]
    assert 'modal_weight' in one_d and any(n.endswith('bias') for n in one_d)
    trainer = Trainer(model, graph, TrainConfig(**{**FAST, 'epochs': 1}))
    stepped = {id(p) for g in trainer.optimizer.param_groups for p in g['params']}
    assert stepped == {id(p) for p in model.parameters() if p.requires_grad}


@pytest.mark.parametrize('critic_every', [1, 3])
def test_critic_steps_every_critic_every_batches_counted_over_the_run(critic_every):
    # 4 batches per epoch, 2 epochs: run steps 0..7; the critic runs where step % k == 0
    _, trainer = _fit(epochs=2, model_cls=_CriticLightGCN, batches_per_epoch=4,
                      critic_every=critic_every)
    expected = []
    for step in range(8):
        # the model step sees the batch the critic just saw, or a fresh one
        expected += ['critic', 'model'] if step % critic_every == 0 else ['model-no-cache']
    assert trainer.model.calls == expected


def test_resume_restores_patience_counter_and_random_state(monkeypatch, tmp_path):
    """SGL redraws its edge-dropout views from the global torch RNG every epoch and the
    sampler has its own generator: a resumed run equals the uninterrupted one only when both
    are restored. Validation: best at epoch 1, then worse; patience 3 stops after epoch 4,
    which the resumed run (cut after epoch 2, one bad evaluation) must count too."""
    from mmssl_pyg.models.sgl import SGL
    values = [0.5, 0.1, 0.2, 0.3, 0.4, 0.45, 0.46]
    kw = dict(model_cls=SGL, device='cpu', patience=3)
    monkeypatch.setattr(trainer_module, 'evaluate', _scripted_evaluate(values))
    full, _ = _fit(epochs=10, checkpoint_dir=tmp_path / 'full', **kw)
    assert [h['epoch'] for h in full.history] == [1, 2, 3, 4] and full.stopped_early
    scripted = _scripted_evaluate(values)  # one stream over the cut run and its resume
    monkeypatch.setattr(trainer_module, 'evaluate', scripted)
    _fit(epochs=2, checkpoint_dir=tmp_path / 'cut', **kw)
    torch.manual_seed(999)  # another process's global RNG state
    resumed, trainer = _fit(epochs=10, checkpoint_dir=tmp_path / 'cut', model_seed=123,
                            resume=True, **kw)
    assert resumed.resumed_from_epoch == 2
    assert [h['epoch'] for h in resumed.history] == [1, 2, 3, 4] and resumed.stopped_early
    assert resumed.best_epoch == 1 and trainer.bad_evals == 3
    for a, b in zip(full.history[2:], resumed.history[2:]):  # the epochs after the cut
        for key in ('train/loss', 'train/bpr', 'train/ssl'):
            assert a[key] == b[key], (a['epoch'], key)


@pytest.mark.parametrize('exclude', [True, False])
def test_trainer_tests_with_exclude_val_at_test(exclude):
    from mmssl_pyg.testing import exclusion_graph
    graph, user_emb, item_emb = exclusion_graph()
    config = TrainConfig(**{**FAST, 'epochs': 1, 'ks': (1,), 'metric': 'recall@1',
                                   'exclude_val_at_test': exclude})
    result = Trainer(_FixedScores(user_emb, item_emb), graph, config).fit()
    # by hand (see exclusion_graph): each user's top-1 is its val item unless it is excluded
    assert result.test['recall@1'] == (1.0 if exclude else 0.0)
    assert result.val['recall@1'] == 1.0


# ---------------------------------------------------------------------------------------------
# what a user sees when a model, a graph or an option does not fit (messages in full)

class _NoCriticParameters(LightGCN):
    """Claims a critic but hands the trainer no critic parameters."""
    has_critic = True


class _TensorLoss(LightGCN):
    """``loss`` returns the bare tensor instead of the dict of terms."""

    def loss(self, batch):
        return super().loss(batch)['loss']


class _UnnamedLoss(LightGCN):
    """``loss`` returns the terms without the ``'loss'`` key."""

    def loss(self, batch):
        out = super().loss(batch)
        return {'bpr': out['bpr'], 'reg': out['reg']}


class _NaNFirstEpoch(_NaNLightGCN):
    nan_epoch = 1


def test_trainer_refusals_name_the_numbers_and_the_fix_in_full():
    graph = synthetic_graph()  # 60 users, 40 items
    other = synthetic_graph(num_users=50, num_items=30, seed=1)
    torch.manual_seed(0)
    model = LightGCN(graph, embedding_dim=8)
    with pytest.raises(ValueError) as err:
        Trainer(model, other, TrainConfig(**FAST))
    assert str(err.value) == (
        f'LightGCN was built on another graph (60 users, 40 items, '
        f'{graph.train_edge_index.size(1)} training edges) than the one given to Trainer '
        f'(50 users, 30 items, {other.train_edge_index.size(1)} training edges). Fix: build '
        f'the model on the graph you train it on')
    with pytest.raises(ConfigError) as err:
        Trainer(model, graph, TrainConfig(**{**FAST, 'ks': (20, 41, 50)}))
    assert str(err.value) == ('ks [41, 50] exceed the number of items (40): top-k lists '
                              'cannot be that long. Fix: use cut-offs <= 40')
    frozen = LightGCN(graph, embedding_dim=8)
    for p in frozen.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError) as err:
        Trainer(frozen, graph, TrainConfig(**FAST))
    assert str(err.value) == 'LightGCN has no trainable parameters'
    with pytest.raises(ValueError) as err:
        Trainer(_NoCriticParameters(graph, embedding_dim=8), graph, TrainConfig(**FAST))
    assert str(err.value) == ('_NoCriticParameters.has_critic is True but critic_parameters() '
                              'returned no trainable parameters')


def test_process_group_refusals_in_full_and_replicas_made_identical(monkeypatch):
    """No collective runs before these checks: contexts of a group that is never started."""
    from mmssl_pyg.training.distributed import DistContext
    graph = synthetic_graph()
    torch.manual_seed(0)
    model = LightGCN(graph, embedding_dim=8)
    with pytest.raises(ConfigError) as err:
        Trainer(model, graph, TrainConfig(**{**FAST, 'device': 'cpu'}),
                distributed=DistContext(0, 2, 0, 'nccl'))
    assert str(err.value) == ("the process group uses NCCL (GPUs) but device is 'cpu'; use "
                              "device cuda (or a gloo group on CPU)")
    with pytest.raises(ConfigError) as err:
        Trainer(model, graph, TrainConfig(**{**FAST, 'batches_per_epoch': 3}),
                distributed=DistContext(0, 4, 0, 'gloo'))
    assert str(err.value) == ('an epoch has 3 mini-batches but 4 processes: every process '
                              'needs at least one batch per epoch (raise batches_per_epoch or '
                              'use fewer processes)')
    # as many batches as processes is enough; the model is then copied from rank 0
    sent = []
    monkeypatch.setattr(DistContext, 'broadcast_module',
                        lambda self, module, src=0: sent.append(module))
    trainer = Trainer(model, graph, TrainConfig(**{**FAST, 'batches_per_epoch': 4}),
                      distributed=DistContext(1, 4, 1, 'gloo'))
    assert sent == [model] and trainer.dist == DistContext(1, 4, 1, 'gloo')
    assert isinstance(trainer.tracker, trainer_module.NullTracker)  # only rank 0 logs


@pytest.mark.parametrize('model_cls, got', [(_TensorLoss, 'Tensor'), (_UnnamedLoss, 'dict')])
def test_a_loss_that_is_not_a_dict_with_loss_is_refused_in_full(model_cls, got):
    graph = synthetic_graph()
    torch.manual_seed(0)
    trainer = Trainer(model_cls(graph, embedding_dim=8), graph, TrainConfig(**FAST))
    with pytest.raises(TypeError) as err:
        trainer.fit()
    assert str(err.value) == (f"{model_cls.__name__}.loss(batch) must return a dict with key "
                              f"'loss', got {got}")


def test_non_finite_loss_message_in_full(tmp_path):
    """BPR (and so the total) turns NaN at batch index 1; the message names the BPR term,
    and the last good checkpoint once an epoch has been saved."""
    batches = math.ceil(synthetic_graph().num_train / FAST['batch_size'])
    tail = ('Try a lower lr or check the input features.')
    with pytest.raises(NonFiniteLossError) as err:
        _fit(epochs=3, checkpoint_dir=tmp_path / 'saved', model_cls=_NaNLightGCN)
    assert str(err.value) == (
        f"non-finite loss term 'bpr' (= nan) from _NaNLightGCN.loss at epoch 2, batch index 1 "
        f"(0-based, of {batches}); non-finite terms: ['loss', 'bpr']. Training stopped before "
        f"the optimiser step; the last good checkpoint is {tmp_path / 'saved' / 'last.pt'} "
        f"(epoch 1). {tail}")
    for kw in ({}, {'checkpoint_dir': tmp_path / 'first'}):  # nothing saved to point to
        with pytest.raises(NonFiniteLossError) as err:
            _fit(epochs=3, model_cls=_NaNFirstEpoch, **kw)
        assert str(err.value) == (
            f"non-finite loss term 'bpr' (= nan) from _NaNFirstEpoch.loss at epoch 1, batch "
            f"index 1 (0-based, of {batches}); non-finite terms: ['loss', 'bpr']. Training "
            f"stopped before the optimiser step. {tail}")


def test_testing_refuses_a_best_checkpoint_of_another_epoch(monkeypatch, tmp_path):
    monkeypatch.setattr(trainer_module, 'evaluate', _scripted_evaluate([0.5, 0.1]))
    result, trainer = _fit(epochs=2, checkpoint_dir=tmp_path)
    assert result.best_epoch == 1
    (tmp_path / 'best.pt').write_bytes((tmp_path / 'last.pt').read_bytes())  # epoch 2
    with pytest.raises(RuntimeError) as err:
        trainer._test_best()
    assert str(err.value) == f'{tmp_path / "best.pt"} holds epoch 2, but the best epoch is 1'


class _PlainModel(torch.nn.Module):
    """Not a Recommender and without ``trainable`` / ``has_critic``: the trainer takes it as
    a trainable model without a critic."""

    def __init__(self, graph):
        super().__init__()
        self.user = torch.nn.Embedding(graph.num_users, 4)
        self.item = torch.nn.Embedding(graph.num_items, 4)

    def model_parameters(self):
        return list(self.parameters())

    def on_epoch_start(self, epoch):
        pass

    def on_epoch_end(self, epoch):
        pass

    def get_embedding(self):
        return self.user.weight, self.item.weight

    def loss(self, batch):
        u = self.user(batch.users)
        pos, neg = (u * self.item(batch.pos)).sum(1), (u * self.item(batch.neg)).sum(1)
        return {'loss': torch.nn.functional.softplus(neg - pos).mean()}


def test_a_model_without_the_recommender_flags_trains_without_a_critic():
    graph = synthetic_graph()
    torch.manual_seed(0)
    model = _PlainModel(graph)
    before = model.user.weight.detach().clone()
    trainer = Trainer(model, graph, TrainConfig(**{**FAST, 'epochs': 2, 'batches_per_epoch': 3}))
    assert trainer.trains and trainer.critic_optimizer is None
    result = trainer.fit()
    assert [h['epoch'] for h in result.history] == [1, 2]
    assert all('train/loss' in h for h in result.history)
    assert not torch.equal(model.user.weight.detach(), before)


def test_a_run_stopped_early_resumes_only_with_more_patience(monkeypatch, tmp_path):
    """Patience 1 stops after epoch 2 (worse than epoch 1). Resumed with patience 1 it stays
    stopped (no new epoch); with patience 3 it trains on and stops after epoch 4 (the third
    evaluation below epoch 1's), without early stopping (0) it trains to the last epoch."""
    values = [0.5, 0.1, 0.2, 0.3, 0.4]
    for patience, epochs, stopped in ((1, [1, 2], True), (3, [1, 2, 3, 4], True),
                                      (0, [1, 2, 3, 4], False)):
        run = tmp_path / f'patience-{patience}'
        monkeypatch.setattr(trainer_module, 'evaluate', _scripted_evaluate(values))
        first, _ = _fit(epochs=4, patience=1, checkpoint_dir=run)
        assert [h['epoch'] for h in first.history] == [1, 2] and first.stopped_early
        resumed, _ = _fit(epochs=4, patience=patience, checkpoint_dir=run, resume=True)
        assert [h['epoch'] for h in resumed.history] == epochs, patience
        assert resumed.stopped_early is stopped and resumed.resumed_from_epoch == 2


class _LossSpy(LightGCN):
    """Records every batch's loss."""

    def __init__(self, graph, embedding_dim=8):
        super().__init__(graph, embedding_dim=embedding_dim)
        self.losses = []

    def loss(self, batch):
        out = super().loss(batch)
        self.losses.append(float(out['loss']))
        return out


def test_progress_bars_show_epochs_batches_and_losses(capsys):
    """With ``progress``: one bar over the epochs (its postfix the epoch's mean loss and
    validation metric) and, per epoch, a bar over the batches, its postfix the loss of every
    tenth batch (0, 10, ...). tqdm redraws at most every 0.1 s: only the states drawn on
    creation and on each postfix change are certain to be in the output."""
    result, trainer = _fit(epochs=2, model_cls=_LossSpy, batches_per_epoch=12, progress=True)
    err = capsys.readouterr().err
    assert 'epochs:   0%|          | 0/2 [00:00<?, ?epoch/s]' in err
    for h in result.history:
        assert (f', train/loss={h["train/loss"]:.4g}, '
                f'val/recall@20={h["val/recall@20"]:.4g}]') in err
    losses = trainer.model.losses
    for epoch in (1, 2):
        assert f'epoch {epoch}:   0%|          | 0/12 [00:00<?, ?batch/s]' in err
        for step in (0, 10):
            assert f', loss={losses[(epoch - 1) * 12 + step]:.4g}]' in err
    assert '| 2/2 [' in err


class _SometimesUsed(LightGCN):
    """A model parameter (``bonus``) that only the first model step uses, and a critic
    parameter (``gate``) that every model step uses but only the first critic step; each
    records its value when a step starts."""
    has_critic = True

    def __init__(self, graph, embedding_dim=8):
        super().__init__(graph, embedding_dim=embedding_dim)
        self.bonus = torch.nn.Parameter(torch.tensor(0.5))
        self.gate = torch.nn.Parameter(torch.tensor(0.5))
        self.scale = torch.nn.Parameter(torch.tensor(1.0))  # in every critic step
        self.bonus_seen, self.gate_seen = [], []

    def critic_parameters(self):
        return [self.gate, self.scale]

    def critic_loss(self, batch):
        self.gate_seen.append(float(self.gate))
        real = self.item_emb(batch.pos).detach().sum() * self.scale
        return {'loss': real * self.gate if len(self.gate_seen) == 1 else real}

    def loss(self, batch):
        self.bonus_seen.append(float(self.bonus))
        out = super().loss(batch)
        out['loss'] = out['loss'] + self.gate ** 2
        if len(self.bonus_seen) == 1:
            out['loss'] = out['loss'] + self.bonus ** 2
        return out


def test_a_step_leaves_the_parameters_it_does_not_reach_as_they_are():
    """Adam(W) moves a parameter that has a gradient, even a zero one (its moment estimates
    carry on); one without a gradient is skipped. So each step clears the gradients to none,
    and a parameter the step's loss does not reach keeps its value: ``bonus`` moves in the
    first model step only, ``gate`` in the first critic step only (the model steps' L_G
    gradient reaches it, but only the critic optimiser steps it, after clearing)."""
    graph = synthetic_graph()
    torch.manual_seed(0)
    model = _SometimesUsed(graph)
    Trainer(model, graph, TrainConfig(**{**FAST, 'epochs': 1, 'batches_per_epoch': 3})).fit()
    b0, b1, b2 = model.bonus_seen
    assert b1 != b0 and b2 == b1
    g0, g1, g2 = model.gate_seen
    assert g1 != g0 and g2 == g1


# ---------------------------------------------------------------------------------------------
# rank 1 of two processes, its group played by rank 0's documented answers (no process group)

def _rank1_trainer(monkeypatch, graph, answers, checkpoint_dir=None, **cfg):
    """A trainer of rank 1 (of 2): ``broadcast_object`` returns what rank 0 would send, taken
    in turn from ``answers``; ``all_reduce_`` sums this rank's tensor with the next of
    ``answers`` (rank 0's); the model is rank 0's already."""
    from mmssl_pyg.training.distributed import DistContext
    monkeypatch.setattr(DistContext, 'broadcast_module', lambda self, module, src=0: None)
    monkeypatch.setattr(DistContext, 'broadcast_object', lambda self, obj, src=0: answers.pop(0))
    monkeypatch.setattr(DistContext, 'all_reduce_',
                        lambda self, t, op='sum': t.add_(answers.pop(0)))
    torch.manual_seed(0)
    return Trainer(LightGCN(graph, embedding_dim=8), graph,
                   TrainConfig(**{**FAST, 'batches_per_epoch': 4, **cfg}),
                   checkpoint_dir=checkpoint_dir, distributed=DistContext(1, 2, 1, 'gloo'))


def _stream(seed):
    import random

    import numpy as np
    return (torch.rand(4, generator=torch.Generator().manual_seed(seed)).tolist(),
            np.random.RandomState(seed).random_sample(), random.Random(seed).random())


def _drawn():
    import random

    import numpy as np
    return torch.rand(4).tolist(), np.random.random_sample(), random.random()


def test_a_resumed_rank_continues_its_own_random_stream_or_a_fresh_one(monkeypatch, tmp_path):
    """Rank 1 restores its own saved random state when the checkpoint was written by as many
    processes; from a checkpoint of one process (no per-rank states) or of three, it seeds a
    fresh stream: ``seed + 1_000_003 * rank + epoch``."""
    from mmssl_pyg.training.checkpoint import rng_state, save_checkpoint
    graph = synthetic_graph()
    _fit(epochs=2, checkpoint_dir=tmp_path)  # one process: no 'rng_ranks'
    single = load_checkpoint(tmp_path / 'last.pt')
    assert 'rng_ranks' not in single and single['epoch'] == 2
    torch.manual_seed(0)
    rank0 = rng_state()
    from mmssl_pyg.training.device import seed_everything
    seed_everything(123)
    rank1 = rng_state()
    for ranks, expected in ((None, 7 + 1_000_003 + 2), ([rank0, rank1], 123),
                            ([rank0, rank1, rank0], 7 + 1_000_003 + 2)):
        state = dict(single) if ranks is None else {**single, 'rng_ranks': ranks}
        run = tmp_path / f'ranks-{0 if ranks is None else len(ranks)}'
        save_checkpoint(state, run / 'last.pt')
        # rank 1 reads no file (the run folder need only be readable where rank 0 runs)
        elsewhere = tmp_path / 'rank1' / run.name
        trainer = _rank1_trainer(monkeypatch, graph, [True, load_checkpoint(run / 'last.pt')],
                                 checkpoint_dir=elsewhere)
        torch.manual_seed(999)  # whatever this process drew before
        assert trainer._start(resume=True) == 2
        assert _drawn() == _stream(expected), ranks is None or len(ranks)
        assert not elsewhere.exists() and not (run / 'best.pt').exists()  # only rank 0 writes
    # a fresh start (rank 0 found no last.pt): rank 1's own noise stream is seed + rank
    trainer = _rank1_trainer(monkeypatch, graph, [False], checkpoint_dir=tmp_path / 'fresh')
    assert trainer._start(resume=True) is None and _drawn() == _stream(7 + 1)


def test_non_finite_terms_of_two_processes_name_whose_batch(monkeypatch):
    """Every process stops on the summed terms; rank 1 names its own batch when its terms were
    not finite, else rank 0's batch by the step (batch index 5 of rank 1 is step 2)."""
    graph = synthetic_graph()
    out = {'loss': torch.tensor(1.5), 'bpr': torch.tensor(1.0)}
    rank0 = [torch.tensor([float('nan'), float('nan')]), torch.tensor([0.5, 0.5]),
             torch.tensor([0.5, 0.5])]  # rank 0's terms in the three steps
    trainer = _rank1_trainer(monkeypatch, graph, rank0)
    with pytest.raises(NonFiniteLossError) as err:
        trainer._check_finite(out, 'loss', 3, 5, 8)
    assert str(err.value) == (
        "non-finite loss term 'bpr' (= nan) from LightGCN.loss at epoch 3, the batch of "
        "another process in step 2 (0-based, of 8 batches); non-finite terms: ['loss', 'bpr']. "
        "Training stopped before the optimiser step. Try a lower lr or check the input "
        "features.")
    bad = {'loss': torch.tensor(float('inf')), 'bpr': torch.tensor(1.0)}
    with pytest.raises(NonFiniteLossError) as err:
        trainer._check_finite(bad, 'loss', 3, 5, 8)
    assert str(err.value) == (
        "non-finite loss term 'loss' (= inf) from LightGCN.loss at epoch 3, batch index 5 "
        "(0-based, of 8); non-finite terms: ['loss']. Training stopped before the optimiser "
        "step. Try a lower lr or check the input features.")
    # finite everywhere: the terms summed over the processes
    assert trainer._check_finite(out, 'loss', 3, 5, 8) == {'loss': 2.0, 'bpr': 1.5}


class _NamedCriticTerms(_CriticLightGCN):
    """Critic terms named every way: the total, a plain name, names that already start with
    ``critic`` (one of them ``critic_loss`` itself)."""

    def critic_loss(self, batch):
        out = super().critic_loss(batch)
        real = out['real']
        return {'loss': out['loss'], 'gp': real * 0, 'critic': real * 2, 'critic_real': real,
                'critic_loss': real * 3}


def test_critic_terms_are_logged_under_critic_names():
    result, _ = _fit(epochs=1, model_cls=_NamedCriticTerms)
    h = result.history[0]
    critic = {k for k in h if k.startswith('train/critic')}
    assert critic == {'train/critic_loss', 'train/critic_gp', 'train/critic',
                      'train/critic_real', 'train/critic_critic_loss'}
    # the total stays the critic objective; the model's terms keep their names
    assert h['train/critic_critic_loss'] == pytest.approx(3 * h['train/critic_real'])
    assert h['train/critic'] == pytest.approx(2 * h['train/critic_real'])
    assert {'train/loss', 'train/bpr', 'train/reg', 'train/generator'} <= set(h)


def test_epoch_and_evaluation_seconds_are_wall_clock_durations():
    import time
    t0 = time.perf_counter()
    result, _ = _fit(epochs=3, eval_every=2)
    took = time.perf_counter() - t0
    first, second, third = result.history
    assert 'eval_seconds' not in first
    assert all(0 < h['epoch_seconds'] < took for h in result.history)
    assert all(0 < h['eval_seconds'] < took for h in (second, third))
    assert sum(h['epoch_seconds'] + h.get('eval_seconds', 0) for h in result.history) < took


def test_optimisers_take_the_configured_options_and_no_loss_scaler_without_fp16():
    graph = synthetic_graph()
    torch.manual_seed(0)
    options = dict(lr=0.05, weight_decay=0.01, critic_lr=0.02, critic_betas=(0.4, 0.8),
                   critic_weight_decay=0.003)
    for precision in ('fp32', 'bf16'):
        trainer = Trainer(_CriticLightGCN(graph), graph,
                          TrainConfig(**{**FAST, **options, 'precision': precision}))
        model, critic = trainer.optimizer.defaults, trainer.critic_optimizer.defaults
        assert (model['lr'], model['weight_decay']) == (0.05, 0.01)
        assert (critic['lr'], critic['betas'], critic['weight_decay']) == (0.02, (0.4, 0.8),
                                                                           0.003)
        assert trainer.scaler is None and trainer.critic_scaler is None, precision


def test_fit_without_resume_starts_afresh_in_a_used_folder(tmp_path):
    first, _ = _fit(epochs=2, checkpoint_dir=tmp_path)
    graph = synthetic_graph()
    torch.manual_seed(0)
    trainer = Trainer(LightGCN(graph, embedding_dim=8), graph,
                      TrainConfig(**{**FAST, 'epochs': 1}), checkpoint_dir=tmp_path)
    again = trainer.fit()  # resume is off unless asked for
    assert [h['epoch'] for h in again.history] == [1] and again.resumed_from_epoch is None
    assert again.history[0]['train/loss'] == first.history[0]['train/loss']
    assert set(again.test) == {f'{m}@{k}' for k in (10, 20)  # and the test split is evaluated
                               for m in ('recall', 'precision', 'ndcg', 'hit')}
    assert load_checkpoint(tmp_path / 'last.pt')['epoch'] == 1


def test_progress_bar_options(monkeypatch):
    """What each bar is given: the epochs bar counts from the epoch a run starts at (a resumed
    run's bar starts part-full), each epoch's batch bar is removed when done, and both follow
    the terminal's width. tqdm records every bar it is asked for."""
    import tqdm.auto
    bars = []

    class Recorded(list):
        def __init__(self, iterable, **kwargs):
            super().__init__(iterable)
            bars.append((list(iterable), kwargs))

    monkeypatch.setattr(tqdm.auto, 'tqdm', Recorded)
    _fit(epochs=2, batches_per_epoch=3, progress=True)
    ours = [(items, kw) for items, kw in bars if kw.get('unit') != 'block']  # not evaluation's
    assert ours == [
        ([1, 2], {'dynamic_ncols': True, 'desc': 'epochs', 'unit': 'epoch', 'initial': 0,
                  'total': 2}),
        ([0, 1, 2], {'dynamic_ncols': True, 'desc': 'epoch 1', 'unit': 'batch', 'leave': False}),
        ([0, 1, 2], {'dynamic_ncols': True, 'desc': 'epoch 2', 'unit': 'batch', 'leave': False})]


def test_progress_bar_of_a_resumed_run_starts_at_its_epoch(monkeypatch, tmp_path):
    import tqdm.auto
    bars = []
    monkeypatch.setattr(tqdm.auto, 'tqdm',
                        lambda iterable, **kw: bars.append((list(iterable), kw)) or iterable)
    _fit(epochs=1, batches_per_epoch=2, checkpoint_dir=tmp_path)
    bars.clear()
    graph = synthetic_graph()
    torch.manual_seed(0)
    trainer = Trainer(LightGCN(graph, embedding_dim=8), graph,
                      TrainConfig(**{**FAST, 'epochs': 3, 'batches_per_epoch': 2,
                                     'progress': True}), checkpoint_dir=tmp_path)
    assert trainer.fit(resume=True).resumed_from_epoch == 1
    epochs = [(items, kw) for items, kw in bars if kw.get('unit') == 'epoch']
    assert epochs == [([2, 3], {'dynamic_ncols': True, 'desc': 'epochs', 'unit': 'epoch',
                                'initial': 1, 'total': 3})]


def test_evaluations_get_the_configured_options_and_the_tracker_every_epoch(monkeypatch):
    """Validation and the one test evaluation read ``eval_batch_size`` and ``progress``, the
    test evaluation ``exclude_val_at_test`` too; the tracker logs each epoch's record (but the
    epoch, its step), the run's options and a summary of the best epoch."""
    calls = []
    monkeypatch.setattr(trainer_module, 'evaluate', _scripted_evaluate([0.1, 0.3], calls))
    tracker = MemoryTracker()
    result, _ = _fit(epochs=2, tracker=tracker, eval_batch_size=7, exclude_val_at_test=True)
    assert calls == [('val', {'batch_size': 7, 'progress': False})] * 2 + [
        ('test', {'exclude_val_at_test': True, 'batch_size': 7, 'progress': False})]
    assert tracker.history == [(h['epoch'], {k: v for k, v in h.items() if k != 'epoch'})
                               for h in result.history]
    assert tracker.config['train']['eval_batch_size'] == 7
    assert tracker.summary_ == {'best_epoch': 2, **{f'val/{k}': 0.3 for k in result.val},
                                **{f'test/{k}': -1.0 for k in result.test}}


def test_checkpoints_hold_the_options_and_the_callers_entries(tmp_path):
    graph = synthetic_graph()
    torch.manual_seed(0)
    config = TrainConfig(**{**FAST, 'epochs': 1, 'batches_per_epoch': 2})
    meta = {'model': 'lightgcn', 'data': {'name': 'synthetic'}}
    Trainer(LightGCN(graph, embedding_dim=8), graph, config, checkpoint_dir=tmp_path,
            meta=meta).fit()
    for name in ('last.pt', 'best.pt'):
        state = load_checkpoint(tmp_path / name)
        assert state['config'] == config.to_dict() and state['meta'] == meta, name
        assert state['epoch'] == 1 and state['critic_optimizer'] is None


class _CriticSpy(_CriticLightGCN):
    """Records the critic objective of every critic step."""

    def critic_loss(self, batch):
        out = super().critic_loss(batch)
        self.critic_values = getattr(self, 'critic_values', []) + [out['loss'].item()]
        return out


def test_a_critic_model_on_one_of_two_processes_whose_peer_computed_the_same(monkeypatch):
    """Rank 1 of two, the collectives answered as a peer with the same values would (sums
    double, gathers repeat, rank 0 sends what rank 1 has): both optimisers average the two
    processes' gradients, and the logged critic objective is the mean of this rank's (every
    step's sum over two processes, divided by the two batches)."""
    from mmssl_pyg.training.distributed import DistContext
    monkeypatch.setattr(DistContext, 'broadcast_module', lambda self, module, src=0: None)
    monkeypatch.setattr(DistContext, 'broadcast_object', lambda self, obj, src=0: obj)
    monkeypatch.setattr(DistContext, 'all_gather_object', lambda self, obj: [obj, obj])
    monkeypatch.setattr(DistContext, 'all_reduce_',
                        lambda self, t, op='sum': t.mul_(2) if op == 'sum' else t)
    graph = synthetic_graph()
    torch.manual_seed(0)
    model = _CriticSpy(graph)
    weight = model.critic.weight.detach().clone()  # (the bias cancels in fake - real)
    trainer = Trainer(model, graph, TrainConfig(**{**FAST, 'epochs': 1, 'batches_per_epoch': 6}),
                      distributed=DistContext(1, 2, 1, 'gloo'))
    h = trainer.fit(test=False).history[0]
    assert len(model.critic_values) == 3  # batches 1, 3 and 5 of the epoch's 6
    assert h['train/critic_loss'] == pytest.approx(sum(model.critic_values) / 3)
    assert h['dist/world_size'] == 2
    assert not torch.equal(model.critic.weight.detach(), weight)


def test_a_data_parallel_trainer_hands_its_process_group_to_every_evaluation(monkeypatch):
    """Under torchrun each evaluation ranks its share of the users and gathers the metrics:
    validation and the final test evaluation both get ``distributed=`` the trainer's context
    (rank 1 of two, the collectives answered as a peer with the same values would)."""
    from mmssl_pyg.training.distributed import DistContext
    monkeypatch.setattr(DistContext, 'broadcast_module', lambda self, module, src=0: None)
    monkeypatch.setattr(DistContext, 'broadcast_object', lambda self, obj, src=0: obj)
    monkeypatch.setattr(DistContext, 'all_gather_object', lambda self, obj: [obj, obj])
    monkeypatch.setattr(DistContext, 'all_reduce_',
                        lambda self, t, op='sum': t.mul_(2) if op == 'sum' else t)
    calls = []
    monkeypatch.setattr(trainer_module, 'evaluate', _scripted_evaluate([0.1, 0.3], calls))
    graph = synthetic_graph()
    torch.manual_seed(0)
    ctx = DistContext(1, 2, 1, 'gloo')
    trainer = Trainer(LightGCN(graph, embedding_dim=8), graph,
                      TrainConfig(**{**FAST, 'epochs': 2, 'eval_batch_size': 7,
                                     'exclude_val_at_test': True}), distributed=ctx)
    result = trainer.fit()
    assert result.best_epoch == 2 and result.test['recall@20'] == -1.0
    assert calls == [('val', {'batch_size': 7, 'progress': False, 'distributed': ctx})] * 2 + [
        ('test', {'exclude_val_at_test': True, 'batch_size': 7, 'progress': False,
                  'distributed': ctx})]
