"""Fast unit tests of ``mmssl_pyg/training/trainer.py``: every method of :class:`Trainer` alone.

``test_trainer.py`` trains real models (LightGCN, MMSSL, SGL) for whole epochs; these check each
step of the trainer on a 4-user, 5-item graph with stand-ins whose numbers can be worked by hand:
a two-weight model whose loss terms are sums of the batch's ids, a scripted sampler, a scripted
``evaluate``, a clock that ticks 9, 16, 25, 36, ... and a process group whose peers computed the
same as this process (issue 27: mutmut runs a function's fastest tests first, so these decide
the trainer's mutants in seconds instead of the minute of a training test)."""
from __future__ import annotations

import math
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mmssl_pyg.data.graph import RecGraph
from mmssl_pyg.models.base import Batch, Recommender
from mmssl_pyg.testing import exclusion_graph
from mmssl_pyg.training import trainer as trainer_module
from mmssl_pyg.training.checkpoint import load_checkpoint, rng_state, save_checkpoint
from mmssl_pyg.training.distributed import DistContext
from mmssl_pyg.training.options import ConfigError, TrainConfig
from mmssl_pyg.training.tracking import MemoryTracker, NullTracker
from mmssl_pyg.training.trainer import (
    FitResult,
    NonFiniteLossError,
    Trainer,
    _critic_key,
    _tqdm,
)

#: Cut-offs and metric that fit a 5-item graph.
BASE = dict(ks=(2, 5), metric='recall@5', progress=False, seed=11, batch_size=2, device='cpu',
            epochs=3, patience=0)


def _config(**kw) -> TrainConfig:
    return TrainConfig(**{**BASE, **kw})


def _graph(num_items: int = 5) -> RecGraph:
    """4 users, ``num_items`` items; 6 training pairs (users 0 and 1 have two items)."""
    train = torch.tensor([[0, 0, 1, 1, 2, 3], [0, 1, 1, 2, 3, 4]])
    val = torch.tensor([[0, 2], [2, 0]])
    test = torch.tensor([[1, 3], [0, 1]])
    return RecGraph(4, num_items, train, val, test, name='hand')


def _tensors(*lists):
    return [torch.tensor(x) for x in lists]


def _no_pairs():
    return torch.zeros(2, 0, dtype=torch.long), torch.zeros(2, 0, dtype=torch.long)


class _Toy(Recommender):
    """Two weights. ``loss``: term ``loss`` = the sum of the batch's user ids (plus
    ``w.sum() - w.sum()``, zero but with gradient 1 for each weight, so every step moves them),
    term ``size`` = the batch's length. Records every hook call and what ``loss`` saw."""

    def __init__(self, graph):
        super().__init__(graph)
        self.w = torch.nn.Parameter(torch.tensor([1.0, -1.0]))
        self.calls = []

    def on_epoch_start(self, epoch):
        self.calls.append(('start', epoch, self.training))

    def on_epoch_end(self, epoch):
        self.calls.append(('end', epoch))

    def loss(self, batch):
        final = None if batch.final is None else batch.final.tolist()
        self.calls.append(('loss', batch.users.tolist(), final,
                           torch.is_autocast_enabled('cpu')))
        zero = self.w.sum() - self.w.sum().detach()
        return {'loss': zero + float(batch.users.sum()),
                'size': torch.tensor(float(len(batch)))}

    def get_embedding(self):
        return self.w.expand(4, 2), self.w.expand(5, 2)


class _CriticToy(_Toy):
    """A critic weight ``c``. ``critic_loss``: ``loss`` = the sum of the positives' ids (plus
    ``c - c``), ``gp`` = 2, ``critic_x`` = the batch's length."""
    has_critic = True

    def __init__(self, graph):
        super().__init__(graph)
        self.c = torch.nn.Parameter(torch.tensor([0.5]))

    def critic_parameters(self):
        return [self.c]

    def critic_loss(self, batch):
        self.calls.append(('critic', batch.users.tolist()))
        zero = (self.c - self.c.detach()).sum()
        return {'loss': zero + float(batch.pos.sum()), 'gp': torch.tensor(2.0),
                'critic_x': torch.tensor(float(len(batch)))}


class _Frozen(Recommender):
    """No parameters (``trainable = False``), like the popularity baseline."""
    trainable = False

    def __init__(self, graph):
        super().__init__(graph)
        self.calls = []

    def on_epoch_start(self, epoch):
        self.calls.append(('start', epoch))

    def on_epoch_end(self, epoch):
        self.calls.append(('end', epoch))


class _Script:
    """A :class:`BPRSampler` stand-in: batch ``i`` of the run is ``batches[i % len(batches)]``
    (users, positives, negatives), ``per_epoch`` batches an epoch."""

    def __init__(self, batches, per_epoch=None, num_users=4):
        self.batches = [Batch(*_tensors(*b)) for b in batches]
        self.per_epoch = per_epoch or len(batches)
        self.num_users = num_users
        self.drawn = 0
        self.generator = torch.Generator()

    def __len__(self):
        return self.per_epoch

    def sample(self):
        b = self.batches[self.drawn % len(self.batches)]
        self.drawn += 1
        return Batch(b.users.clone(), b.pos.clone(), b.neg.clone())

    def state_dict(self):
        return {'drawn': self.drawn}

    def load_state_dict(self, state):
        self.drawn = state['drawn']


#: An epoch of three batches: users 0 and 1, 2 and 3, 1 and 2 (and their positives, negatives).
THREE = [([0, 1], [0, 1], [4, 4]), ([2, 3], [3, 4], [0, 0]), ([1, 2], [2, 3], [0, 1])]


class _Evaluations:
    """Stands in for ``trainer.evaluate``: validation returns the next of ``values`` (a number:
    every recall that number and every ndcg its negative; a dict: itself), test returns
    ``test`` for every metric; records ``(split, ks, kwargs, model weights)`` per call."""

    def __init__(self, values=(), test=-1.0):
        self.values, self.test, self.calls, self.seen = iter(values), test, [], []

    def __call__(self, model, graph, split, ks, **kwargs):
        self.seen.append((model, graph))
        weights = model.w.detach().clone() if hasattr(model, 'w') else None
        self.calls.append((split, tuple(ks), kwargs, weights))
        v = next(self.values) if split == 'val' else self.test
        if isinstance(v, dict):
            return dict(v)
        return {f'{m}@{k}': (v if m == 'recall' else -v) for k in ks for m in ('recall', 'ndcg')}


def _metrics(v, ks=(2, 5)):
    return {f'{m}@{k}': (v if m == 'recall' else -v) for k in ks for m in ('recall', 'ndcg')}


@pytest.fixture
def evaluations(monkeypatch):
    """``evaluations(values, test=...)`` installs an :class:`_Evaluations` as the trainer's
    ``evaluate``."""
    def install(values=(), test=-1.0):
        fake = _Evaluations(values, test)
        monkeypatch.setattr(trainer_module, 'evaluate', fake)
        return fake
    return install


@pytest.fixture
def clock(monkeypatch):
    """The trainer's ``time.perf_counter`` returns 9, 16, 25, 36, ... (call ``i``:
    ``(i + 3)**2``), so each measured duration names the calls it spans (16 - 9 = 7, then 9,
    11, 13, ...); ``peak_memory_mb`` returns 7.5."""
    ticks = iter(range(3, 10_000))
    monkeypatch.setattr(trainer_module, 'time',
                        SimpleNamespace(perf_counter=lambda: float(next(ticks) ** 2)))
    monkeypatch.setattr(trainer_module, 'peak_memory_mb', lambda device: 7.5)


class _Peers(DistContext):
    """Rank ``rank`` of ``world_size`` processes whose peers computed the same as this one:
    sums multiply by the world size (or add the next of ``others``), a maximum is this
    process's value unless ``peak`` is given, gathers repeat this process's object (or give
    ``gathered``), a broadcast returns the object (or the next of ``answers``, what rank 0
    sent). Records every collective."""

    def __init__(self, rank=1, world_size=2, backend='gloo', answers=None, gathered=None,
                 peak=None, others=None):
        super().__init__(rank, world_size, rank, backend)
        self.answers, self.gathered, self.peak, self.calls = answers, gathered, peak, []
        self.others = others  # the peers' sum of each 'sum' reduction, in turn (else: ours)

    def all_reduce_(self, tensor, op='sum'):
        self.calls.append(('all_reduce_', op, tensor.dtype, tensor.tolist()))
        if op == 'sum' and self.others:
            tensor.add_(self.others.pop(0))
        elif op == 'sum':
            tensor.mul_(self.world_size)
        elif self.peak is not None:
            tensor.fill_(max(float(tensor.max()), self.peak))
        return tensor

    def broadcast_object(self, obj, src=0):
        self.calls.append(('broadcast_object', obj, src))
        return self.answers.pop(0) if self.answers else obj

    def all_gather_object(self, obj):
        self.calls.append(('all_gather_object',))
        return list(self.gathered) if self.gathered is not None else [obj] * self.world_size

    def all_gather(self, tensor):
        return [tensor] * self.world_size

    def barrier(self):
        self.calls.append(('barrier',))

    def average_gradients(self, params, num_contributors, bucket_bytes=64 << 20):
        self.calls.append(('average_gradients', len(list(params)), num_contributors))

    def broadcast_module(self, module, src=0):
        self.calls.append(('broadcast_module', module, src))

    def average_buffers(self, module):
        self.calls.append(('average_buffers', module))

    def names(self):
        return [c[0] for c in self.calls]


def _trainer(model_cls=_Toy, graph=None, script=THREE, per_epoch=None, **kw) -> Trainer:
    """A trainer of a fresh ``model_cls`` on :func:`_graph` (``kw``: the options, and
    ``tracker``, ``checkpoint_dir``, ``meta``, ``distributed``), its sampler scripted."""
    graph = graph or _graph()
    extra = {k: kw.pop(k) for k in ('tracker', 'checkpoint_dir', 'meta', 'distributed')
             if k in kw}
    trainer = Trainer(model_cls(graph), graph, _config(**kw), **extra)
    if script is not None:
        trainer.sampler = _Script(script, per_epoch)
    return trainer


def _draws():
    return torch.rand(3).tolist(), float(np.random.random_sample()), random.random()


def _seeded(seed):
    """What :func:`seed_everything(seed) <mmssl_pyg.training.device.seed_everything>` then
    :func:`_draws` gives: each library's first draws from ``seed``."""
    return (torch.rand(3, generator=torch.Generator().manual_seed(seed)).tolist(),
            float(np.random.RandomState(seed).random_sample()), random.Random(seed).random())


class _Bar:
    """A tqdm stand-in: records its arguments, the items drawn, the postfixes and the close."""

    def __init__(self, iterable, **kwargs):
        self.items, self.kwargs = list(iterable), kwargs
        self.drawn, self.postfix, self.closed = [], [], False

    def __iter__(self):
        for x in self.items:
            self.drawn.append(x)
            yield x

    def set_postfix(self, *args, **kwargs):
        self.postfix.append(args[0] if args else kwargs)

    def close(self):
        self.closed = True


@pytest.fixture
def bars(monkeypatch):
    """Every progress bar the trainer makes (a :class:`_Bar`), in order."""
    import tqdm.auto
    made = []

    def make(iterable, **kwargs):
        made.append(_Bar(iterable, **kwargs))
        return made[-1]

    monkeypatch.setattr(tqdm.auto, 'tqdm', make)
    return made


# ---------------------------------------------------------------------------------------------
# module helpers and FitResult


def test_critic_key_of_every_kind_of_term_name():
    assert _critic_key('loss', {}) == 'critic_loss'
    assert _critic_key('gp', {}) == 'critic_gp'
    assert _critic_key('real', {'loss': 1}) == 'critic_real'
    assert _critic_key('critic', {}) == 'critic'  # already a critic name: kept
    assert _critic_key('critic_real', {}) == 'critic_real'
    assert _critic_key('criticism', {}) == 'criticism'
    assert _critic_key('critic_loss', {}) == 'critic_critic_loss'  # not the total's name
    assert _critic_key('Critic', {}) == 'critic_Critic'
    assert _critic_key('my_critic', {}) == 'critic_my_critic'


def test_tqdm_off_is_the_iterable_itself_and_on_a_bar_of_the_terminals_width(bars):
    items = range(3)
    assert _tqdm(items, False, desc='x') is items and bars == []
    bar = _tqdm(items, True, desc='epochs', unit='epoch')
    assert bars == [bar] and bar.items == [0, 1, 2]
    assert bar.kwargs == {'dynamic_ncols': True, 'desc': 'epochs', 'unit': 'epoch'}
    assert _tqdm(items, 1) is bars[-1] and bars[-1].kwargs == {'dynamic_ncols': True}


def test_non_finite_loss_error_is_a_floating_point_error():
    assert issubclass(NonFiniteLossError, FloatingPointError)


def test_fit_result_defaults_and_plain_dict():
    result = FitResult(3, {'recall@5': 0.5}, {'recall@5': 0.25})
    assert (result.history, result.stopped_early, result.checkpoint_dir,
            result.resumed_from_epoch) == ([], False, None, None)
    assert FitResult(1, {}, {}).history is not FitResult(1, {}, {}).history
    assert result.to_dict() == {'best_epoch': 3, 'val': {'recall@5': 0.5},
                                'test': {'recall@5': 0.25}, 'stopped_early': False,
                                'history': [], 'resumed_from_epoch': None,
                                'checkpoint_dir': None}
    history = [{'epoch': 1}]
    full = FitResult(2, {}, {}, history, True, Path('a') / 'b', 4).to_dict()
    assert full == {'best_epoch': 2, 'val': {}, 'test': {}, 'stopped_early': True,
                    'history': history, 'resumed_from_epoch': 4,
                    'checkpoint_dir': str(Path('a') / 'b')}
    assert isinstance(full['checkpoint_dir'], str)


# ---------------------------------------------------------------------------------------------
# the constructor


def test_a_fresh_trainer_starts_at_epoch_0_with_nothing_selected():
    trainer = _trainer(script=None)
    assert (trainer.epoch, trainer.best_metric, trainer.best_epoch, trainer.best_val,
            trainer.bad_evals, trainer.stopped_early, trainer.history) == \
        (0, -math.inf, 0, {}, 0, False, [])
    assert trainer._best_state is None and trainer.dist_log == []
    assert trainer._term_names == {} and trainer._critic_keys == set()
    assert trainer.trains is True and trainer.critic_optimizer is None
    assert trainer.scaler is None and trainer.critic_scaler is None and trainer.amp_dtype is None
    assert trainer.dist == DistContext() and trainer.device == torch.device('cpu')
    assert trainer.graph.num_users == 4 and trainer.graph.name == 'hand'
    assert torch.equal(trainer.graph.train_edge_index, _graph().train_edge_index)
    assert isinstance(trainer.tracker, NullTracker) and trainer.checkpoint_dir is None
    assert trainer.meta == {}


def test_without_a_config_the_trainer_takes_the_documented_defaults():
    graph = _graph(num_items=50)  # the default cut-offs go up to 50
    trainer = Trainer(_Toy(graph), graph)
    assert trainer.config == TrainConfig()
    assert trainer.sampler.batch_size == 1024 and len(trainer.sampler) == 1  # ceil(6 / 1024)
    assert trainer.sampler.generator.initial_seed() == 2023


def test_the_sampler_takes_the_batch_size_the_epoch_length_and_the_seed():
    graph = _graph()
    trainer = Trainer(_Toy(graph), graph, _config(batch_size=4, seed=5))
    assert trainer.sampler.batch_size == 4 and len(trainer.sampler) == 2  # ceil(6 / 4)
    assert trainer.sampler.generator.initial_seed() == 5
    trainer = Trainer(_Toy(graph), graph, _config(batches_per_epoch=7))
    assert len(trainer.sampler) == 7 and trainer.sampler.batch_size == 2


def test_cutoffs_beyond_the_items_are_refused_in_full():
    graph = _graph()
    with pytest.raises(ConfigError) as err:
        Trainer(_Toy(graph), graph, _config(ks=(2, 6, 7), metric='recall@2'))
    assert str(err.value) == ('ks [6, 7] exceed the number of items (5): top-k lists cannot be '
                              'that long. Fix: use cut-offs <= 5')
    Trainer(_Toy(graph), graph, _config(ks=(5,), metric='recall@5'))  # as many as the items


def test_a_model_built_on_another_graph_is_refused_in_full():
    graph = _graph()
    other = RecGraph(3, 5, torch.tensor([[0, 1, 2], [0, 1, 2]]), *_no_pairs())
    with pytest.raises(ValueError) as err:
        Trainer(_Toy(graph), other, _config())
    assert str(err.value) == (
        '_Toy was built on another graph (4 users, 5 items, 6 training edges) than the one '
        'given to Trainer (3 users, 5 items, 3 training edges). Fix: build the model on the '
        'graph you train it on')
    # the same counts but other edges: the checksum differs
    moved = RecGraph(4, 5, torch.tensor([[0, 0, 1, 1, 2, 3], [0, 1, 1, 2, 3, 3]]),
                     *_no_pairs())
    with pytest.raises(ValueError, match='^_Toy was built on another graph'):
        Trainer(_Toy(graph), moved, _config())
    plain = _Toy(graph)
    plain.graph_signature = list(plain.graph_signature)  # compared as a tuple
    Trainer(plain, graph, _config())
    del plain.graph_signature  # a model that does not say: not checked
    Trainer(plain, other, _config())


def test_the_optimisers_take_the_trainable_parameters_and_the_options():
    graph = _graph()
    model = _CriticToy(graph)
    model.frozen = torch.nn.Parameter(torch.zeros(1), requires_grad=False)
    model.frozen_c = torch.nn.Parameter(torch.zeros(1), requires_grad=False)
    model.critic_parameters = lambda: [model.c, model.frozen_c]
    trainer = Trainer(model, graph, _config(lr=0.05, weight_decay=0.01, critic_lr=0.02,
                                            critic_betas=(0.4, 0.8), critic_weight_decay=0.003))
    opt, critic = trainer.optimizer, trainer.critic_optimizer
    assert type(opt) is torch.optim.AdamW and type(critic) is torch.optim.Adam
    assert [p for g in opt.param_groups for p in g['params']] == [model.w]
    assert [p for g in critic.param_groups for p in g['params']] == [model.c]
    assert trainer._model_params == [model.w] and trainer._critic_params == [model.c]
    assert (opt.defaults['lr'], opt.defaults['weight_decay']) == (0.05, 0.01)
    assert (critic.defaults['lr'], critic.defaults['betas'], critic.defaults['weight_decay']) \
        == (0.02, (0.4, 0.8), 0.003)
    assert type(critic.defaults['betas']) is tuple
    defaults = Trainer(_CriticToy(graph), graph, _config())
    assert defaults.optimizer.defaults['lr'] == 1e-3
    assert defaults.optimizer.defaults['weight_decay'] == 0.0
    assert (defaults.critic_optimizer.defaults['lr'], defaults.critic_optimizer.defaults['betas'],
            defaults.critic_optimizer.defaults['weight_decay']) == (3e-4, (0.5, 0.9), 0.0)


def test_models_without_what_the_optimisers_need_are_refused_in_full():
    graph = _graph()
    frozen = _Toy(graph)
    frozen.w.requires_grad_(False)
    with pytest.raises(ValueError) as err:
        Trainer(frozen, graph, _config())
    assert str(err.value) == '_Toy has no trainable parameters'
    critic = _CriticToy(graph)
    critic.c.requires_grad_(False)
    with pytest.raises(ValueError) as err:
        Trainer(critic, graph, _config())
    assert str(err.value) == ('_CriticToy.has_critic is True but critic_parameters() returned '
                              'no trainable parameters')


def test_a_model_without_parameters_trains_without_an_optimiser():
    graph = _graph()
    trainer = Trainer(_Frozen(graph), graph, _config())
    assert trainer.trains is False and trainer.optimizer is None
    assert trainer.critic_optimizer is None and trainer._model_params == []


class _Plain(torch.nn.Module):
    """Not a Recommender: no ``trainable``, ``has_critic`` or ``graph_signature``."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(2))

    def model_parameters(self):
        return [self.w]


def test_a_module_without_the_recommender_flags_is_trainable_without_a_critic():
    trainer = Trainer(_Plain(), _graph(), _config())
    assert trainer.trains is True and trainer.critic_optimizer is None
    assert trainer._critic_params == [] and trainer.optimizer is not None


def test_num_threads_sets_torchs_threads(monkeypatch):
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        _trainer(script=None)  # None: left as it is
        assert torch.get_num_threads() == 2
        _trainer(script=None, num_threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)


def test_the_tracker_the_meta_and_the_run_folder(tmp_path):
    tracker, meta = MemoryTracker(), {'model': 'toy', 'data': {'name': 'hand'}}
    trainer = _trainer(script=None, tracker=tracker, meta=meta, checkpoint_dir=str(tmp_path))
    assert trainer.tracker is tracker and trainer.meta == meta and trainer.meta is not meta
    assert trainer.checkpoint_dir == tmp_path and isinstance(trainer.checkpoint_dir, Path)
    assert not list(tmp_path.iterdir())  # nothing written before fit
    # only rank 0 logs
    other = _trainer(script=None, tracker=tracker, distributed=_Peers(rank=1))
    assert isinstance(other.tracker, NullTracker)
    main = _trainer(script=None, tracker=tracker, distributed=_Peers(rank=0))
    assert main.tracker is tracker


def test_a_process_group_needs_a_batch_per_process_and_gets_rank_0s_model():
    graph = _graph()
    with pytest.raises(ConfigError) as err:
        Trainer(_Toy(graph), graph, _config(batches_per_epoch=2),
                distributed=_Peers(world_size=3))
    assert str(err.value) == ('an epoch has 2 mini-batches but 3 processes: every process '
                              'needs at least one batch per epoch (raise batches_per_epoch or '
                              'use fewer processes)')
    peers = _Peers(world_size=3)
    model = _Toy(graph)
    trainer = Trainer(model, graph, _config(batches_per_epoch=3), distributed=peers)
    assert peers.calls == [('broadcast_module', model, 0)] and trainer.dist is peers
    alone = _Peers(rank=0, world_size=1)
    Trainer(_Toy(graph), graph, _config(batches_per_epoch=1), distributed=alone)
    assert alone.calls == []  # one process: no collective


class _Anywhere(_Toy):
    """Records where it is moved to (and stays on the CPU)."""

    def to(self, device):
        self.moved_to = device
        return self


class _AnyGraph(RecGraph):
    def to(self, device):
        self.moved_to = device
        return self


def test_nccl_needs_a_gpu_and_takes_the_local_rank_as_its_index(monkeypatch):
    graph = _graph()
    with pytest.raises(ConfigError) as err:
        Trainer(_Toy(graph), graph, _config(), distributed=_Peers(0, 2, 'nccl'))
    assert str(err.value) == ("the process group uses NCCL (GPUs) but device is 'cpu'; use "
                              "device cuda (or a gloo group on CPU)")
    asked = []

    def resolve(device):
        asked.append(device)
        return torch.device(device)

    monkeypatch.setattr(trainer_module, 'resolve_device', resolve)
    for device, expected in (('cuda', torch.device('cuda', 1)),
                             ('cuda:0', torch.device('cuda', 0))):
        g = _AnyGraph(4, 5, graph.train_edge_index, graph.val_edge_index, graph.test_edge_index)
        model = _Anywhere(g)
        trainer = Trainer(model, g, _config(device=device, batches_per_epoch=2),
                          distributed=_Peers(1, 2, 'nccl'))
        assert trainer.device == expected and model.moved_to == expected
        assert g.moved_to == expected and asked[-1] == device
    # gloo keeps the device as resolved
    g = _AnyGraph(4, 5, graph.train_edge_index, graph.val_edge_index, graph.test_edge_index)
    trainer = Trainer(_Anywhere(g), g, _config(device='cuda', batches_per_epoch=2),
                      distributed=_Peers(1, 2, 'gloo'))
    assert trainer.device == torch.device('cuda') and trainer.device.index is None


def test_fp16_gives_one_loss_scaler_per_optimiser(monkeypatch):
    asked = []
    monkeypatch.setattr(trainer_module, '_amp_dtype',
                        lambda precision, device: asked.append((precision, device))
                        or torch.float16)
    trainer = _trainer(_CriticToy, script=None, precision='fp16')
    assert asked == [('fp16', torch.device('cpu'))] and trainer.amp_dtype == torch.float16
    # scalers of the trainer's device (GradScaler's default device, cuda, is disabled here)
    for scaler in (trainer.scaler, trainer.critic_scaler):
        assert isinstance(scaler, torch.amp.GradScaler) and scaler.is_enabled()
        assert scaler._device == 'cpu'
    assert trainer.scaler is not trainer.critic_scaler
    plain = _trainer(script=None, precision='fp16')
    assert isinstance(plain.scaler, torch.amp.GradScaler) and plain.critic_scaler is None
    assert plain.scaler._device == 'cpu'
    bf16 = _trainer(_CriticToy, script=None, precision='bf16')
    assert bf16.scaler is None and bf16.critic_scaler is None
    with trainer._autocast():  # float16, not autocast's CPU default (bfloat16)
        assert torch.is_autocast_enabled('cpu')
        assert torch.get_autocast_dtype('cpu') == torch.float16


def test_bf16_autocast_dtype_on_the_cpu():
    trainer = _trainer(script=None, precision='bf16')
    assert trainer.amp_dtype == torch.bfloat16
    with trainer._autocast():
        assert torch.is_autocast_enabled('cpu')
        assert torch.get_autocast_dtype('cpu') == torch.bfloat16
    assert not torch.is_autocast_enabled('cpu')
    plain = _trainer(script=None)
    with plain._autocast():
        assert not torch.is_autocast_enabled('cpu')


# ---------------------------------------------------------------------------------------------
# the start of fit: fresh or resumed


def test_a_fresh_start_seeds_every_stream_and_the_samplers_generator(tmp_path):
    trainer = _trainer(script=None, seed=5, checkpoint_dir=tmp_path)
    save_checkpoint({'epoch': 9}, tmp_path / 'last.pt')  # there, but resume is not asked for
    fresh = torch.Generator().manual_seed(5).get_state()
    for resume, folder in ((False, tmp_path), (True, None), (True, tmp_path / 'empty')):
        trainer.checkpoint_dir = folder
        trainer.sampler.generator.manual_seed(99)
        torch.manual_seed(99)
        assert trainer._start(resume=resume) is None, (resume, folder)
        assert _draws() == _seeded(5)
        assert torch.equal(trainer.sampler.generator.get_state(), fresh)
        assert trainer.epoch == 0


def test_a_fresh_start_of_rank_1_takes_rank_0s_answer_and_its_own_noise_stream(tmp_path):
    save_checkpoint({'epoch': 9}, tmp_path / 'last.pt')  # rank 1 sees a file, rank 0 did not
    peers = _Peers(rank=1, answers=[False])
    trainer = _trainer(script=None, seed=5, checkpoint_dir=tmp_path, distributed=peers)
    assert trainer._start(resume=True) is None
    assert peers.calls[-1] == ('broadcast_object', True, 0)
    assert _draws() == _seeded(6)  # seed + rank
    # every process draws the same batches: the sampler takes the seed itself
    assert torch.equal(trainer.sampler.generator.get_state(),
                       torch.Generator().manual_seed(5).get_state())


def _saved(tmp_path, **fields) -> Trainer:
    """A trainer of seed 5 whose state (``fields`` set first, weights ``[3, 4]``) is saved as
    ``tmp_path/last.pt``."""
    trainer = _trainer(_CriticToy, script=None, seed=5, checkpoint_dir=tmp_path, patience=2)
    with torch.no_grad():
        trainer.model.w.copy_(torch.tensor([3.0, 4.0]))
    for k, v in fields.items():
        setattr(trainer, k, v)
    save_checkpoint(trainer.state_dict(), tmp_path / 'last.pt')
    return trainer


def test_a_resumed_start_restores_last_pt_and_returns_its_epoch(tmp_path):
    _saved(tmp_path, epoch=3, best_epoch=2, best_metric=0.5, bad_evals=1,
           history=[{'epoch': e} for e in (1, 2, 3)])
    saved = rng_state()
    expected = _draws()  # what follows the saved state
    save_checkpoint({**load_checkpoint(tmp_path / 'last.pt'), 'rng': saved},
                    tmp_path / 'last.pt')
    trainer = _trainer(_CriticToy, script=None, seed=5, checkpoint_dir=tmp_path, patience=2)
    torch.manual_seed(123)
    assert trainer._start(resume=True) == 3
    assert _draws() == expected
    assert trainer.model.w.tolist() == [3.0, 4.0]
    assert (trainer.epoch, trainer.best_epoch, trainer.best_metric, trainer.bad_evals) == \
        (3, 2, 0.5, 1)
    assert trainer.history == [{'epoch': 1}, {'epoch': 2}, {'epoch': 3}]


@pytest.mark.parametrize('patience, stopped', [(0, False), (1, True), (2, True), (3, False)])
def test_a_run_stopped_early_resumes_stopped_unless_it_has_more_patience(tmp_path, patience,
                                                                       stopped):
    """Saved stopped after 2 evaluations without improvement: patience 2 (or less) has run
    out, 3 has not, 0 never runs out."""
    _saved(tmp_path, epoch=4, best_epoch=2, bad_evals=2, stopped_early=True)
    trainer = _trainer(_CriticToy, script=None, seed=5, checkpoint_dir=tmp_path,
                       patience=patience)
    assert trainer._start(resume=True) == 4
    assert trainer.stopped_early is stopped


def test_a_run_that_did_not_stop_resumes_running_even_past_its_patience(tmp_path):
    _saved(tmp_path, epoch=4, best_epoch=1, bad_evals=3, stopped_early=False)
    trainer = _trainer(_CriticToy, script=None, seed=5, checkpoint_dir=tmp_path, patience=2)
    assert trainer._start(resume=True) == 4 and trainer.stopped_early is False


# ---------------------------------------------------------------------------------------------
# validation, the end of an epoch and the end of fit


def test_validation_runs_every_eval_every_epochs_and_after_the_last(evaluations, clock):
    fake = evaluations([0.1] * 7)
    trainer = _trainer(eval_every=3)
    evaluated = []
    for epoch in range(1, 8):
        record = {}
        improved = trainer._validate(epoch, 7, record)
        if record:
            evaluated.append(epoch)
        else:
            assert improved is False
    assert evaluated == [3, 6, 7] and len(fake.calls) == 3
    trainer = _trainer()  # eval_every 1: every epoch
    fake = evaluations([0.3, 0.2, 0.1])
    assert [trainer._validate(e, 9, {}) for e in (1, 2, 3)] == [True, False, False]
    assert len(fake.calls) == 3


def test_validation_keeps_the_first_maximum_and_counts_evaluations_without_improvement(
        evaluations, clock):
    evaluations([0.2, 0.1, 0.2, 0.5, 0.5, 0.4, float('nan')])
    trainer = _trainer()  # patience 0: never stops
    seen = []
    for epoch in range(1, 8):
        improved = trainer._validate(epoch, 10, {})
        seen.append((improved, trainer.best_epoch, trainer.best_metric, trainer.bad_evals))
    assert seen == [(True, 1, 0.2, 0), (False, 1, 0.2, 1), (False, 1, 0.2, 2),
                    (True, 4, 0.5, 0), (False, 4, 0.5, 1), (False, 4, 0.5, 2),
                    (False, 4, 0.5, 3)]
    assert trainer.best_val == _metrics(0.5) and trainer.stopped_early is False


@pytest.mark.parametrize('patience, stops_after', [(1, 2), (2, 3), (3, 4)])
def test_validation_stops_when_patience_evaluations_in_a_row_did_not_improve(
        evaluations, clock, patience, stops_after):
    evaluations([0.5, 0.4, 0.3, 0.2, 0.1])
    trainer = _trainer(patience=patience)
    stopped = []
    for epoch in range(1, 6):
        trainer._validate(epoch, 10, {})
        stopped.append(trainer.stopped_early)
    assert stopped == [e >= stops_after for e in range(1, 6)]
    assert trainer.best_epoch == 1


def test_validation_records_its_metrics_and_seconds_and_asks_with_the_options(
        evaluations, clock):
    fake = evaluations([0.25])
    trainer = _trainer(eval_batch_size=7, progress=True)
    record = {'epoch': 1}
    assert trainer._validate(1, 3, record) is True
    assert record == {'epoch': 1, 'eval_seconds': 7.0, 'val/recall@2': 0.25,
                      'val/ndcg@2': -0.25, 'val/recall@5': 0.25, 'val/ndcg@5': -0.25}
    assert [c[:3] for c in fake.calls] == [('val', (2, 5), {'batch_size': 7, 'progress': True})]
    assert fake.seen == [(trainer.model, trainer.graph)]
    assert trainer.best_val == _metrics(0.25) and trainer.best_metric == 0.25
    peers = _Peers(rank=0)
    trainer = _trainer(distributed=peers, batches_per_epoch=2)
    fake = evaluations([0.25])
    trainer._validate(1, 3, {})
    assert fake.calls[0][2] == {'batch_size': 1024, 'progress': False, 'distributed': peers}


def test_validation_selects_on_the_configured_metric(evaluations, clock):
    first = {'recall@2': 0.9, 'ndcg@2': 0.1, 'recall@5': 0.9, 'ndcg@5': 0.1}
    second = {'recall@2': 0.1, 'ndcg@2': 0.2, 'recall@5': 0.1, 'ndcg@5': 0.2}
    evaluations([first, second])
    trainer = _trainer(metric='ndcg@2')
    assert trainer._validate(1, 5, {}) is True and trainer._validate(2, 5, {}) is True
    assert trainer.best_epoch == 2 and trainer.best_metric == 0.2 and trainer.best_val == second


def test_the_end_of_an_epoch_records_logs_saves_and_shows_the_loss(tmp_path, clock):
    tracker = MemoryTracker()
    trainer = _trainer(tracker=tracker, checkpoint_dir=tmp_path)
    bar = _Bar([])
    record = {'epoch': 2, 'train/loss': 1.23456, 'train/size': 2.0, 'val/recall@5': 0.123456,
              'val/recall@2': 0.5}
    trainer._end_epoch(2, record, True, bar)
    assert trainer.epoch == 2 and trainer.history == [record]
    assert record['peak_memory_mb'] == 7.5
    assert tracker.history == [(2, {'train/loss': 1.23456, 'train/size': 2.0,
                                    'val/recall@5': 0.123456, 'val/recall@2': 0.5,
                                    'peak_memory_mb': 7.5})]
    assert bar.postfix == [{'train/loss': '1.235', 'val/recall@5': '0.1235'}]
    assert load_checkpoint(tmp_path / 'last.pt')['epoch'] == 2
    assert load_checkpoint(tmp_path / 'best.pt')['epoch'] == 2
    trainer._end_epoch(3, {'epoch': 3, 'train/loss': 2.0}, False, range(0))  # no bar to show
    assert [h['epoch'] for h in trainer.history] == [2, 3] and trainer.epoch == 3
    assert load_checkpoint(tmp_path / 'last.pt')['epoch'] == 3
    assert load_checkpoint(tmp_path / 'best.pt')['epoch'] == 2
    assert tracker.history[-1] == (3, {'train/loss': 2.0, 'peak_memory_mb': 7.5})


def test_the_end_of_fit_tests_the_best_epoch_and_logs_the_summary(evaluations):
    fake = evaluations(test=0.25)
    tracker = MemoryTracker()
    trainer = _trainer(tracker=tracker)
    trainer.best_epoch, trainer.best_val = 2, _metrics(0.5)
    trainer.history, trainer.stopped_early = [{'epoch': 1}, {'epoch': 2}], True
    result = trainer._finish(True, 4)
    assert result == FitResult(2, _metrics(0.5), _metrics(0.25), [{'epoch': 1}, {'epoch': 2}],
                               True, None, 4)
    assert result.val is not trainer.best_val and result.history is not trainer.history
    assert [c[0] for c in fake.calls] == ['test']
    assert tracker.summary_ == {'best_epoch': 2, 'val/recall@2': 0.5, 'val/ndcg@2': -0.5,
                                'val/recall@5': 0.5, 'val/ndcg@5': -0.5, 'test/recall@2': 0.25,
                                'test/ndcg@2': -0.25, 'test/recall@5': 0.25,
                                'test/ndcg@5': -0.25}
    tracker = MemoryTracker()
    trainer.tracker = tracker
    trainer.checkpoint_dir = Path('nowhere')
    trainer.stopped_early = False
    result = trainer._finish(False, None)  # no test: the test split is never read
    assert result == FitResult(2, _metrics(0.5), {}, [{'epoch': 1}, {'epoch': 2}], False,
                               Path('nowhere'), None)
    assert len(fake.calls) == 1
    assert tracker.summary_ == {'best_epoch': 2, 'val/recall@2': 0.5, 'val/ndcg@2': -0.5,
                                'val/recall@5': 0.5, 'val/ndcg@5': -0.5}


# ---------------------------------------------------------------------------------------------
# small pieces of an epoch


def test_progress_is_shown_on_rank_0_only_when_asked():
    assert _trainer(script=None, progress=True)._progress is True
    assert _trainer(script=None, progress=False)._progress is False
    assert _trainer(script=None, progress=True, distributed=_Peers(rank=1))._progress is False
    assert _trainer(script=None, progress=True, distributed=_Peers(rank=0))._progress is True


def test_evaluations_of_a_process_group_get_it():
    assert _trainer(script=None)._eval_kwargs() == {}
    peers = _Peers(rank=1)
    assert _trainer(script=None, distributed=peers)._eval_kwargs() == {'distributed': peers}


def test_peak_memory_is_this_processs_or_the_largest_of_the_group(monkeypatch):
    asked = []
    monkeypatch.setattr(trainer_module, 'peak_memory_mb',
                        lambda device: asked.append(device) or 12)
    trainer = _trainer(script=None)
    assert trainer._peak_memory_mb() == 12 and asked == [torch.device('cpu')]
    for peak, expected in ((30.0, 30.0), (5.0, 12.0)):
        peers = _Peers(rank=1, peak=peak)
        trainer = _trainer(script=None, distributed=peers)
        got = trainer._peak_memory_mb()
        assert got == expected and type(got) is float
        assert peers.calls[-1] == ('all_reduce_', 'max', torch.float64, [12.0])


def test_elapsed_is_the_clock_now_less_the_start(clock):
    trainer = _trainer(script=None)
    assert trainer._elapsed(2.0) == 7.0  # the clock reads 9
    assert trainer._elapsed(20.0) == -4.0  # then 16


def test_draw_epoch_marks_each_users_last_batch_by_hand():
    trainer = _trainer()
    batches = trainer._draw_epoch(3)
    assert trainer.sampler.drawn == 3
    assert [b.users.tolist() for b in batches] == [[0, 1], [2, 3], [1, 2]]
    # user 0 is last drawn in batch 0, user 3 in batch 1, users 1 and 2 in batch 2
    assert [b.final.tolist() for b in batches] == [[True, False], [False, True], [True, True]]
    assert all(b.final.dtype == torch.bool for b in batches)
    again = trainer._draw_epoch(2)  # the script goes on: batches 3 and 4 are THREE's 0 and 1
    assert [b.final.tolist() for b in again] == [[True, True], [True, True]]


def test_draw_epoch_draws_the_samplers_stream_in_order():
    trainer = _trainer(script=None, batches_per_epoch=4, batch_size=3)
    start = trainer.sampler.state_dict()
    batches = trainer._draw_epoch(4)
    trainer.sampler.load_state_dict(start)
    for b in batches:
        one = trainer.sampler.sample()
        assert torch.equal(b.users, one.users) and torch.equal(b.pos, one.pos)
        assert torch.equal(b.neg, one.neg)
    users = [set(b.users.tolist()) for b in batches]
    for i, b in enumerate(batches):
        later = set().union(*users[i + 1:])
        assert b.final.tolist() == [u not in later for u in b.users.tolist()]


def _five():
    out = []
    for i in range(5):
        b = Batch(*_tensors([i], [i + 1], [0]))
        b.final = torch.tensor([i % 2 == 0])
        out.append(b)
    return out


@pytest.mark.parametrize('rank, world, indices', [(0, 1, [0, 1, 2, 3, 4, None]),
                                                  (0, 2, [0, 2, 4, None]),
                                                  (1, 2, [1, 3, None]),
                                                  (2, 3, [2, None])])
def test_next_batch_of_each_rank_is_batch_step_times_world_plus_rank(rank, world, indices):
    trainer = _trainer(script=None, batches_per_epoch=5, distributed=_Peers(rank, world))
    batches = _five()
    for step, index in enumerate(indices):
        got = trainer._next_batch(batches, step)
        if index is None:
            assert got is None
            continue
        assert got is not batches[index] and got.users.tolist() == [index]
        assert got.pos.tolist() == [index + 1] and got.final.tolist() == [index % 2 == 0]


class _Optimizer:
    def __init__(self, log):
        self.log = log

    def step(self):
        self.log.append(('optimizer.step',))


class _Scaler:
    """A GradScaler stand-in that scales by ``factor``."""

    def __init__(self, log, factor=4):
        self.log, self.factor = log, factor

    def scale(self, loss):
        self.log.append(('scale',))
        return loss * self.factor

    def step(self, optimizer):
        self.log.append(('scaler.step', optimizer))

    def update(self):
        self.log.append(('update',))


def test_backward_step_backward_averages_then_steps():
    peers = _Peers(rank=0)
    trainer = _trainer(script=None, distributed=peers, batches_per_epoch=2)
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    peers.calls.clear()
    opt = _Optimizer(peers.calls)
    trainer._backward_step((w * 3).sum(), opt, None, [w], 2)
    assert w.grad.tolist() == [3.0, 3.0]
    assert peers.calls == [('average_gradients', 1, 2), ('optimizer.step',)]
    peers.calls.clear()
    w.grad = None
    scaler = _Scaler(peers.calls)
    trainer._backward_step((w * 3).sum(), opt, scaler, [w], 1)
    assert w.grad.tolist() == [12.0, 12.0]  # scaled by 4
    assert peers.calls == [('scale',), ('average_gradients', 1, 1), ('scaler.step', opt),
                           ('update',)]
    peers.calls.clear()
    w.grad = None
    trainer._backward_step(None, opt, None, [w], 1)  # no batch here: the peers' gradients
    assert w.grad is None
    assert peers.calls == [('average_gradients', 1, 1), ('optimizer.step',)]


def _batch(users, pos=None, neg=None):
    pos = pos if pos is not None else [0] * len(users)
    neg = neg if neg is not None else [4] * len(users)
    return Batch(*_tensors(users, pos, neg))


def test_a_model_step_clears_both_optimisers_gradients_sums_its_terms_and_steps():
    trainer = _trainer(_CriticToy, script=None)
    model = trainer.model
    model.w.grad, model.c.grad = torch.tensor([5.0, 5.0]), torch.tensor([7.0])
    sums = {'train/loss': 1.0}
    values = trainer._model_step(_batch([1, 2]), 1, (1, 0, 3), sums)
    assert values == {'loss': 3.0, 'size': 2.0}
    assert sums == {'train/loss': 4.0, 'train/size': 2.0}
    assert model.w.grad.tolist() == [1.0, 1.0]  # cleared first, not 5 + 1
    assert model.c.grad is None  # the model loss does not reach the critic
    # AdamW's first step moves each weight by lr (1e-3) against its gradient's sign
    assert model.w.tolist() == pytest.approx([0.999, -1.001], abs=1e-6)
    assert model.c.tolist() == [0.5]
    assert trainer._term_names == {'loss': ['loss', 'size']}


def test_a_critic_step_clears_the_critics_gradients_and_logs_critic_names():
    trainer = _trainer(_CriticToy, script=None)
    model = trainer.model
    model.w.grad, model.c.grad = torch.tensor([5.0, 5.0]), torch.tensor([7.0])
    sums = {}
    trainer._critic_step(_batch([1, 2], pos=[2, 3]), 1, (1, 0, 3), sums)
    assert sums == {'train/critic_loss': 5.0, 'train/critic_gp': 2.0, 'train/critic_x': 2.0}
    assert trainer._critic_keys == {'train/critic_loss', 'train/critic_gp', 'train/critic_x'}
    assert model.c.grad.tolist() == [1.0] and model.w.grad.tolist() == [5.0, 5.0]
    assert model.c.tolist() == pytest.approx([0.5 - 3e-4], abs=1e-7)  # Adam, lr 3e-4
    assert model.w.tolist() == [1.0, -1.0]
    trainer._critic_step(_batch([0], pos=[1]), 1, (1, 1, 3), sums)
    assert sums == {'train/critic_loss': 6.0, 'train/critic_gp': 4.0, 'train/critic_x': 3.0}
    assert trainer._term_names == {'critic_loss': ['loss', 'gp', 'critic_x']}


class _Unreached(_CriticToy):
    """A model weight ``u`` and a critic weight ``d`` that no loss reaches."""

    def __init__(self, graph):
        super().__init__(graph)
        self.u = torch.nn.Parameter(torch.tensor([2.0]))
        self.d = torch.nn.Parameter(torch.tensor([3.0]))

    def critic_parameters(self):
        return [self.c, self.d]


def test_each_step_clears_its_gradients_to_none_not_to_zero():
    """A parameter with a gradient, even a zero one, is stepped by Adam(W) (its moments carry
    on); one the step's loss does not reach must have none."""
    trainer = _trainer(_Unreached, script=None)
    model = trainer.model
    for p in model.parameters():
        p.grad = torch.full_like(p, 5.0)
    trainer._critic_step(_batch([1, 2]), 1, (1, 0, 3), {})
    assert model.d.grad is None and model.c.grad.tolist() == [1.0]
    assert model.u.grad.tolist() == [5.0]  # the critic step leaves the model's gradients
    trainer._model_step(_batch([1, 2]), 1, (1, 0, 3), {})
    assert model.u.grad is None and model.w.grad.tolist() == [1.0, 1.0]
    assert model.c.grad is None and model.d.grad is None
    assert (model.u.item(), model.d.item()) == (2.0, 3.0)


def test_a_step_without_a_batch_adds_zeros_and_still_averages_and_steps():
    peers = _Peers(rank=1)
    trainer = _trainer(script=None, distributed=peers, batches_per_epoch=2)
    trainer._model_step(_batch([1, 2]), 2, (1, 1, 3), {})
    peers.calls.clear()
    calls = len(trainer.model.calls)
    sums = {'train/loss': 6.0, 'train/size': 4.0}
    values = trainer._model_step(None, 1, (1, 3, 3), sums)
    assert values == {'loss': 0.0, 'size': 0.0} and len(trainer.model.calls) == calls
    assert sums == {'train/loss': 6.0, 'train/size': 4.0}
    assert peers.calls == [('all_reduce_', 'sum', torch.float32, [0.0, 0.0]),
                           ('average_gradients', 1, 1)]


@pytest.mark.parametrize('precision, autocast', [('fp32', False), ('bf16', True)])
def test_the_losses_run_under_autocast_of_the_precision(precision, autocast):
    trainer = _trainer(script=None, precision=precision)
    trainer._model_step(_batch([1, 2]), 1, (1, 0, 3), {})
    assert trainer.model.calls[-1] == ('loss', [1, 2], None, autocast)
    assert not torch.is_autocast_enabled('cpu')


# ---------------------------------------------------------------------------------------------
# one epoch


def test_an_epoch_by_hand(clock):
    trainer = _trainer()
    trainer.model.eval()
    record = trainer._train_epoch(1)
    assert trainer.model.calls == [('start', 1, True), ('loss', [0, 1], [True, False], False),
                                   ('loss', [2, 3], [False, True], False),
                                   ('loss', [1, 2], [True, True], False), ('end', 1)]
    # user-id sums 1, 5 and 3: mean 3; two users a batch
    assert record == {'epoch': 1, 'train/loss': 3.0, 'train/size': 2.0, 'epoch_seconds': 7.0}
    assert list(record)[0] == 'epoch' and trainer.sampler.drawn == 3
    assert trainer.model.training
    # every step moved the weights by about lr
    assert trainer.model.w.tolist() == pytest.approx([0.997, -1.003], abs=1e-5)
    record = trainer._train_epoch(2)
    assert record['epoch'] == 2 and record['epoch_seconds'] == 11.0  # 36 - 25
    assert trainer.sampler.drawn == 6


#: Four batches: user-id sums 1, 5, 3, 3 and positive-id sums 1, 7, 5, 5.
FOUR = [([0, 1], [0, 1], [4, 4]), ([2, 3], [3, 4], [0, 0]), ([1, 2], [2, 3], [0, 1]),
        ([3, 0], [4, 1], [0, 3])]


@pytest.mark.parametrize('critic_every, epoch, critic_steps', [
    (1, 1, [0, 1, 2, 3]), (1, 2, [0, 1, 2, 3]), (2, 1, [0, 2]), (2, 2, [0, 2]),
    (3, 1, [0, 3]), (3, 2, [2]), (3, 3, [1]), (5, 2, [1])])
def test_the_critic_runs_every_critic_every_steps_counted_over_the_run(
        clock, critic_every, epoch, critic_steps):
    """Run step ``(epoch - 1) * 4 + step``; the critic runs where it is a multiple of
    ``critic_every``, right before the model step on the same batch."""
    trainer = _trainer(_CriticToy, script=FOUR, critic_every=critic_every)
    record = trainer._train_epoch(epoch)
    expected = [('start', epoch)]
    for step, (users, _, _) in enumerate(FOUR):
        if step in critic_steps:
            expected.append(('critic', users))
        expected.append(('loss', users))
    assert [c[:2] for c in trainer.model.calls if c[0] != 'end'] == expected
    positives = [1, 7, 5, 5]
    assert record['train/critic_loss'] == pytest.approx(
        sum(positives[s] for s in critic_steps) / len(critic_steps))
    assert record['train/critic_gp'] == 2.0 and record['train/critic_x'] == 2.0
    assert record['train/loss'] == 3.0 and record['train/size'] == 2.0


#: Five batches: user-id sums 1, 5, 3, 3, 2.
FIVE = FOUR + [([0, 2], [1, 3], [4, 4])]


class _Gathering(_Toy):
    def gather_epoch_state(self, all_gather):
        self.calls.append(('gather', all_gather))


def test_an_epoch_of_rank_1_of_2_takes_every_other_batch(clock):
    """Five batches, two processes: rank 1 takes batches 1 and 3, then has none (rank 0 takes
    4); its peer computed the same terms, so each step's sum is twice this rank's (zero in the
    last step), and the epoch's mean divides by the 5 batches."""
    peers = _Peers(rank=1)
    trainer = _trainer(_Gathering, script=FIVE, distributed=peers)
    record = trainer._train_epoch(1)
    calls = trainer.model.calls
    assert calls[:3] == [('start', 1, True), ('loss', [2, 3], [False, False], False),
                         ('loss', [3, 0], [True, False], False)]
    assert calls[3] == ('gather', peers.all_gather) and calls[4] == ('end', 1)
    assert [c[2] for c in peers.calls if c[0] == 'average_gradients'] == [2, 2, 1]
    assert record == {'epoch': 1, 'train/loss': (10 + 6 + 0) / 5, 'train/size': 8 / 5,
                      'dist/world_size': 2, 'epoch_seconds': 7.0}
    assert [e['epoch'] for e in trainer.dist_log] == [1]


def test_a_critic_epoch_of_rank_1_of_2_averages_both_steps_over_the_processes_with_a_batch(
        clock):
    """Rank 1 of two, five batches: a critic and a model step on batches 1 and 3, then steps
    without a batch; the critic objective (positive-id sums 7 and 5, doubled by the peer) is
    the mean over the 2 + 2 + 1 batches that ran a critic step."""
    peers = _Peers(rank=1)
    trainer = _trainer(_CriticToy, script=FIVE, distributed=peers)
    record = trainer._train_epoch(1)
    assert [c[1:] for c in peers.calls if c[0] == 'average_gradients'] == \
        [(1, 2), (1, 2), (1, 2), (1, 2), (1, 1), (1, 1)]
    assert record['train/critic_loss'] == pytest.approx((14 + 10) / 5)
    assert record['train/critic_gp'] == pytest.approx((4 + 4) / 5)
    assert record['train/loss'] == pytest.approx((10 + 6) / 5)


def test_each_step_backpropagates_through_its_own_loss_scaler():
    trainer = _trainer(_CriticToy, script=None)
    log = []
    trainer.scaler, trainer.critic_scaler = _Scaler(log), _Scaler(log, factor=3)
    trainer._critic_step(_batch([1, 2]), 1, (1, 0, 3), {})
    assert log == [('scale',), ('scaler.step', trainer.critic_optimizer), ('update',)]
    assert trainer.model.c.grad.tolist() == [3.0]  # scaled by 3, and not stepped by Adam
    assert trainer.model.c.tolist() == [0.5]
    log.clear()
    trainer._model_step(_batch([1, 2]), 1, (1, 0, 3), {})
    assert log == [('scale',), ('scaler.step', trainer.optimizer), ('update',)]
    assert trainer.model.w.grad.tolist() == [4.0, 4.0] and trainer.model.w.tolist() == [1.0, -1.0]


class _NaNAt(_Toy):
    """Its loss turns NaN for the batch of users ``[3, 0]``."""

    def loss(self, batch):
        out = super().loss(batch)
        if batch.users.tolist() == [3, 0]:
            out['loss'] = out['loss'] * float('nan')
        return out


@pytest.mark.parametrize('rank, world, where', [(0, 1, 'batch index 3 (0-based, of 5)'),
                                                (1, 2, 'batch index 3 (0-based, of 5)'),
                                                (0, 2, 'the batch of another process in step 1 '
                                                       '(0-based, of 5 batches)')])
def test_a_non_finite_loss_names_the_epoch_and_the_batch(clock, rank, world, where):
    """Batch 3 (users 3 and 0) is NaN: step 3 of one process, step 1 of rank 1 of two (rank 0
    sees it in the sum of step 1)."""
    others = None if rank == 1 or world == 1 else [torch.tensor([0.0, 0.0]),
                                                   torch.tensor([float('nan'), 2.0])]
    trainer = _trainer(_NaNAt, script=FIVE, distributed=_Peers(rank, world, others=others))
    with pytest.raises(NonFiniteLossError) as err:
        trainer._train_epoch(2)
    assert str(err.value) == (
        f"non-finite loss term 'loss' (= nan) from _NaNAt.loss at epoch 2, {where}; non-finite "
        f"terms: ['loss']. Training stopped before the optimiser step. Try a lower lr or check "
        f"the input features.")


def test_the_batch_bar_shows_every_tenth_steps_loss_per_batch(bars):
    trainer = _trainer(script=THREE, per_epoch=12, progress=True)
    trainer._train_epoch(2)
    bar, = bars
    assert bar.kwargs == {'dynamic_ncols': True, 'desc': 'epoch 2', 'unit': 'batch',
                          'leave': False}
    assert bar.items == list(range(12)) and bar.drawn == bar.items and bar.closed
    # steps 0 and 10: batches THREE[0] (users 0, 1) and THREE[1] (users 2, 3)
    assert bar.postfix == [{'loss': '1'}, {'loss': '5'}]
    bars.clear()
    peers = _Peers(rank=0, others=None)
    trainer = _trainer(script=THREE, per_epoch=24, progress=True, distributed=peers)
    trainer._train_epoch(1)
    # 12 steps of two batches; the sum of two processes' 1 (step 0) and 3 (step 10, batch
    # 20 = THREE[2]) over the two
    assert bars[0].items == list(range(12)) and bars[0].postfix == [{'loss': '1'}, {'loss': '3'}]


def test_an_epoch_of_a_model_without_parameters_draws_no_batch(clock, bars):
    trainer = _trainer(_Frozen, progress=True)
    record = trainer._train_epoch(1)
    assert record == {'epoch': 1, 'epoch_seconds': 7.0}
    assert trainer.model.calls == [('start', 1), ('end', 1)] and trainer.sampler.drawn == 0
    assert bars[0].items == [] and bars[0].closed


def test_the_end_of_an_epochs_training_averages_each_term_over_its_batches(clock):
    trainer = _trainer(_CriticToy, script=None)
    trainer._critic_keys = {'train/critic_loss'}
    record = trainer._end_train_epoch(5, {'train/loss': 6.0, 'train/critic_loss': 3.0}, 2, 3,
                                      2.0)
    # model terms over the 3 batches, critic terms over the 2 that ran a critic step
    assert record == {'epoch': 5, 'train/loss': 2.0, 'train/critic_loss': 1.5,
                      'epoch_seconds': 7.0}
    assert list(record)[0] == 'epoch' and trainer.model.calls == [('end', 5)]
    assert trainer.dist_log == []


def test_a_data_parallel_epoch_end_merges_then_ends_then_compares_the_replicas(clock):
    from mmssl_pyg.training.distributed import state_digests
    peers = _Peers(rank=1)
    trainer = _trainer(_Gathering, script=None, distributed=peers, batches_per_epoch=2)
    model = trainer.model
    peers.calls = model.calls  # one log of both
    record = trainer._end_train_epoch(3, {'train/loss': 8.0}, 0, 4, 2.0)
    assert model.calls == [('gather', peers.all_gather), ('average_buffers', model),
                           ('end', 3), ('all_gather_object',)]
    assert record == {'epoch': 3, 'train/loss': 2.0, 'dist/world_size': 2,
                      'epoch_seconds': 7.0}
    digests = state_digests(model)
    assert trainer.dist_log == [{'epoch': 3, 'digests': [digests, digests]}]


# ---------------------------------------------------------------------------------------------
# checks between steps


def test_replicas_that_differ_are_named_in_full():
    from mmssl_pyg.training.distributed import state_digests
    trainer = _trainer(script=None, distributed=_Peers(rank=0, world_size=3),
                       batches_per_epoch=3)
    d = state_digests(trainer.model)
    other = {k: 'x' + v for k, v in d.items()}
    trainer.dist = _Peers(rank=0, world_size=3, gathered=[d, d, d])
    trainer._check_replicas(4)
    assert trainer.dist_log == [{'epoch': 4, 'digests': [d, d, d]}]
    for gathered, bad in (([d, other, d], [1]), ([d, other, other], [1, 2]),
                          ([d, d, other], [2])):
        trainer.dist = _Peers(rank=0, world_size=3, gathered=gathered)
        with pytest.raises(RuntimeError) as err:
            trainer._check_replicas(5)
        assert str(err.value) == (f'data-parallel replicas diverged after epoch 5: the model '
                                  f'state of rank(s) {bad} differs from rank 0 ({gathered})')
        assert trainer.dist_log[-1] == {'epoch': 5, 'digests': gathered}


def test_check_finite_gives_each_terms_mean_as_a_float_and_remembers_the_names():
    trainer = _trainer(script=None)
    w = torch.nn.Parameter(torch.tensor([1.0, 3.0]))
    out = {'loss': w.sum() * 1.25, 'bpr': torch.tensor([1.0, 3.0]), 'n': 3,
           'half': torch.tensor(0.5, dtype=torch.bfloat16)}
    values = trainer._check_finite(out, 'loss', 1, 0, 3)
    assert values == {'loss': 5.0, 'bpr': 2.0, 'n': 3.0, 'half': 0.5}
    assert list(values) == ['loss', 'bpr', 'n', 'half']
    assert all(type(v) is float for v in values.values())
    assert trainer._term_names == {'loss': ['loss', 'bpr', 'n', 'half']}
    trainer._check_finite({'loss': 1.0, 'gp': 2.0}, 'critic_loss', 1, 0, 3)
    assert trainer._term_names == {'loss': ['loss', 'bpr', 'n', 'half'],
                                   'critic_loss': ['loss', 'gp']}


@pytest.mark.parametrize('out, got', [(torch.tensor(1.0), 'Tensor'), ({'bpr': 1.0}, 'dict'),
                                      ([1.0], 'list')])
def test_a_loss_that_is_not_a_dict_with_loss_is_refused_in_full(out, got):
    trainer = _trainer(script=None)
    for fn in ('loss', 'critic_loss'):
        with pytest.raises(TypeError) as err:
            trainer._check_finite(out, fn, 1, 0, 3)
        assert str(err.value) == (f"_Toy.{fn}(batch) must return a dict with key 'loss', "
                                  f"got {got}")


NAN, INF = float('nan'), float('inf')
TAIL = 'Try a lower lr or check the input features.'


@pytest.mark.parametrize('out, term, value, bad', [
    ({'loss': NAN, 'bpr': NAN, 'reg': 1.0}, 'bpr', 'nan', ['loss', 'bpr']),
    ({'loss': INF, 'bpr': 1.0}, 'loss', 'inf', ['loss']),
    ({'loss': NAN, 'a': 1.0, 'b': -INF, 'c': NAN}, 'b', '-inf', ['loss', 'b', 'c']),
    ({'loss': 1.0, 'reg': NAN}, 'reg', 'nan', ['reg'])])
def test_a_non_finite_term_stops_with_the_term_and_where_in_full(tmp_path, out, term, value,
                                                                 bad):
    trainer = _trainer(script=None)
    with pytest.raises(NonFiniteLossError) as err:
        trainer._check_finite(out, 'loss', 3, 1, 4)
    assert str(err.value) == (
        f"non-finite loss term {term!r} (= {value}) from _Toy.loss at epoch 3, batch index 1 "
        f"(0-based, of 4); non-finite terms: {bad}. Training stopped before the optimiser "
        f"step. {TAIL}")
    trainer.checkpoint_dir = tmp_path  # nothing saved yet (epoch 0): no checkpoint named
    with pytest.raises(NonFiniteLossError) as err:
        trainer._check_finite(out, 'critic_loss', 1, 0, 4)
    assert str(err.value).endswith(f'Training stopped before the optimiser step. {TAIL}')
    assert '_Toy.critic_loss at epoch 1, batch index 0 (0-based, of 4)' in str(err.value)
    trainer.epoch = 2
    with pytest.raises(NonFiniteLossError) as err:
        trainer._check_finite(out, 'loss', 3, 1, 4)
    assert str(err.value).endswith(
        f'Training stopped before the optimiser step; the last good checkpoint is '
        f'{tmp_path / "last.pt"} (epoch 2). {TAIL}')
    trainer.checkpoint_dir = None  # an epoch but no folder: nothing to name
    with pytest.raises(NonFiniteLossError) as err:
        trainer._check_finite(out, 'loss', 3, 1, 4)
    assert str(err.value).endswith(f'Training stopped before the optimiser step. {TAIL}')


def test_check_finite_of_two_processes_sums_and_names_whose_batch_was_not_finite():
    ok = {'loss': torch.tensor(1.5), 'bpr': torch.tensor(1.0)}
    peers = _Peers(rank=1, others=[torch.tensor([0.5, 0.5]), torch.tensor([NAN, 2.0]),
                                   torch.tensor([0.0, 0.0]), torch.tensor([0.25, 0.5]),
                                   torch.tensor([INF, 0.0])])
    trainer = _trainer(script=None, distributed=peers, batches_per_epoch=2)
    assert trainer._check_finite(ok, 'loss', 3, 5, 8) == {'loss': 2.0, 'bpr': 1.5}
    with pytest.raises(NonFiniteLossError) as err:  # rank 0's batch
        trainer._check_finite(ok, 'loss', 3, 5, 8)
    assert str(err.value) == (
        "non-finite loss term 'loss' (= nan) from _Toy.loss at epoch 3, the batch of another "
        "process in step 2 (0-based, of 8 batches); non-finite terms: ['loss']. Training "
        f"stopped before the optimiser step. {TAIL}")
    with pytest.raises(NonFiniteLossError) as err:  # ours
        trainer._check_finite({'loss': torch.tensor(1.0), 'bpr': torch.tensor(NAN)}, 'loss',
                              3, 5, 8)
    assert str(err.value) == (
        "non-finite loss term 'bpr' (= nan) from _Toy.loss at epoch 3, batch index 5 (0-based, "
        "of 8); non-finite terms: ['bpr']. Training stopped before the optimiser step. "
        f"{TAIL}")
    # no batch left for this rank: zeros under the names of its last batch, plus the peer's
    assert trainer._check_finite(None, 'loss', 3, 7, 8) == {'loss': 0.25, 'bpr': 0.5}
    with pytest.raises(NonFiniteLossError, match='the batch of another process in step 3 '):
        trainer._check_finite(None, 'loss', 3, 7, 8)


# ---------------------------------------------------------------------------------------------
# checkpoint state


def _same(a, b) -> bool:
    """Equal nested containers of tensors and plain values."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    if torch.is_tensor(a):
        return torch.is_tensor(b) and torch.equal(a, b)
    return a == b


def _stepped(model_cls=_CriticToy, **kw) -> Trainer:
    """A trainer whose optimisers have state (one critic and one model step)."""
    trainer = _trainer(model_cls, **kw)
    if trainer.critic_optimizer is not None:
        trainer._critic_step(_batch([1, 2]), 1, (1, 0, 3), {})
    trainer._model_step(_batch([1, 2]), 1, (1, 0, 3), {})
    return trainer


STATE_KEYS = {'model', 'optimizer', 'critic_optimizer', 'sampler', 'rng', 'epoch', 'best_metric',
              'best_epoch', 'best_val', 'bad_evals', 'stopped_early', 'history', 'config',
              'meta'}


def test_state_dict_holds_everything_a_resumed_run_needs():
    trainer = _stepped(meta={'model': 'toy'})
    trainer.sampler.drawn = 5
    trainer.epoch, trainer.best_metric, trainer.best_epoch = 3, 0.5, 2
    trainer.best_val, trainer.bad_evals, trainer.stopped_early = _metrics(0.5), 1, True
    trainer.history = [{'epoch': 1}, {'epoch': 2}, {'epoch': 3}]
    rng = rng_state()
    state = trainer.state_dict()
    assert set(state) == STATE_KEYS
    assert _same(state['model'], trainer.model.state_dict())
    assert _same(state['optimizer'], trainer.optimizer.state_dict())
    assert _same(state['critic_optimizer'], trainer.critic_optimizer.state_dict())
    assert state['optimizer']['state'][0]['step'] == 1  # stepped: not an empty state
    assert state['sampler'] == {'drawn': 5} and _same(state['rng'], rng)
    assert (state['epoch'], state['best_metric'], state['best_epoch'], state['bad_evals'],
            state['stopped_early']) == (3, 0.5, 2, 1, True)
    assert state['best_val'] == _metrics(0.5) and state['best_val'] is not trainer.best_val
    assert state['history'] == trainer.history and state['history'] is not trainer.history
    assert state['config'] == trainer.config.to_dict() and state['meta'] == {'model': 'toy'}
    plain = _trainer(script=None).state_dict()
    assert plain['critic_optimizer'] is None and set(plain) == STATE_KEYS
    frozen = _trainer(_Frozen, script=None).state_dict()
    assert frozen['optimizer'] is None and frozen['critic_optimizer'] is None


class _StubScaler:
    def __init__(self, scale):
        self.scale, self.loaded = scale, []

    def state_dict(self):
        return {'scale': self.scale}

    def load_state_dict(self, state):
        self.loaded.append(state)


def test_state_dict_holds_the_loss_scalers_and_every_processs_random_state():
    trainer = _trainer(_CriticToy, script=None)
    trainer.scaler = _StubScaler(2.0)
    state = trainer.state_dict()
    assert state['scaler'] == {'scale': 2.0} and 'critic_scaler' not in state
    trainer.critic_scaler = _StubScaler(4.0)
    state = trainer.state_dict()
    assert (state['scaler'], state['critic_scaler']) == ({'scale': 2.0}, {'scale': 4.0})
    trainer.scaler = None
    assert set(trainer.state_dict()) == STATE_KEYS | {'critic_scaler'}
    peers = _Peers(rank=1, world_size=2)
    trainer = _trainer(script=None, distributed=peers, batches_per_epoch=2)
    state = trainer.state_dict()
    assert set(state) == STATE_KEYS | {'rng_ranks', 'world_size'}
    assert state['world_size'] == 2 and _same(state['rng_ranks'], [state['rng']] * 2)
    assert peers.calls[-1] == ('all_gather_object',)


def test_load_on_rank_0_reads_the_file_there_only(tmp_path):
    save_checkpoint({'epoch': 4, 'meta': {'a': 1}}, tmp_path / 'last.pt')
    trainer = _trainer(script=None)
    assert trainer._load_on_rank0(tmp_path / 'last.pt') == {'epoch': 4, 'meta': {'a': 1}}
    peers = _Peers(rank=1, answers=[{'epoch': 7}])
    trainer = _trainer(script=None, distributed=peers, batches_per_epoch=2)
    assert trainer._load_on_rank0(tmp_path / 'missing.pt') == {'epoch': 7}  # never read here
    assert peers.calls[-1] == ('broadcast_object', None, 0)
    peers = _Peers(rank=0)
    trainer = _trainer(script=None, distributed=peers, batches_per_epoch=2)
    assert trainer._load_on_rank0(tmp_path / 'last.pt') == {'epoch': 4, 'meta': {'a': 1}}
    assert peers.calls[-1] == ('broadcast_object', {'epoch': 4, 'meta': {'a': 1}}, 0)


def test_restore_sets_every_field_back_with_its_type():
    saved = _stepped()
    saved.sampler.drawn = 5
    with torch.no_grad():
        saved.model.w.copy_(torch.tensor([3.0, 4.0]))
    state = {**saved.state_dict(), 'epoch': 3.0, 'best_metric': 1, 'best_epoch': 2.0,
             'best_val': {'recall@5': 0.5}, 'bad_evals': 1.0, 'stopped_early': 1,
             'history': ({'epoch': 1},)}
    trainer = _trainer(_CriticToy)
    trainer._restore(state)
    assert trainer.model.w.tolist() == [3.0, 4.0]
    assert trainer.model.c.tolist() == pytest.approx([0.5 - 3e-4], abs=1e-7)  # one Adam step
    assert _same(trainer.optimizer.state_dict(), saved.optimizer.state_dict())
    assert _same(trainer.critic_optimizer.state_dict(), saved.critic_optimizer.state_dict())
    assert trainer.sampler.drawn == 5
    fields = (trainer.epoch, trainer.best_metric, trainer.best_epoch, trainer.bad_evals,
              trainer.stopped_early)
    assert fields == (3, 1.0, 2, 1, True)
    assert [type(f) for f in fields] == [int, float, int, int, bool]
    assert trainer.best_val == {'recall@5': 0.5} and trainer.best_val is not state['best_val']
    assert trainer.history == [{'epoch': 1}] and type(trainer.history) is list


def test_restore_skips_what_the_checkpoint_or_the_trainer_does_not_have():
    saved = _stepped()
    for critic in (None, 'missing'):
        state = saved.state_dict()
        if critic is None:
            state['critic_optimizer'] = None
        else:
            del state['critic_optimizer']
        trainer = _trainer(_CriticToy)
        trainer._restore(state)  # an older checkpoint: the critic optimiser starts afresh
        assert trainer.critic_optimizer.state_dict()['state'] == {}
        assert _same(trainer.optimizer.state_dict(), saved.optimizer.state_dict())
    plain = _stepped(_Toy)
    trainer = _trainer(_Toy)
    trainer._restore({**plain.state_dict(), 'critic_optimizer': {'not': 'read'}})
    assert _same(trainer.optimizer.state_dict(), plain.optimizer.state_dict())
    # the loss scalers: each loaded when both the trainer and the checkpoint have it
    trainer = _trainer(_CriticToy)
    trainer.scaler, trainer.critic_scaler = _StubScaler(1.0), _StubScaler(1.0)
    trainer._restore({**saved.state_dict(), 'scaler': {'scale': 8.0}})
    assert trainer.scaler.loaded == [{'scale': 8.0}] and trainer.critic_scaler.loaded == []
    trainer._restore({**saved.state_dict(), 'scaler': None, 'critic_scaler': {'scale': 2.0}})
    assert trainer.scaler.loaded == [{'scale': 8.0}]
    assert trainer.critic_scaler.loaded == [{'scale': 2.0}]
    trainer.scaler = None
    trainer._restore({**saved.state_dict(), 'scaler': {'scale': 8.0}})  # nothing to load into


def _random_states():
    """Three random states and the draws that follow each."""
    out = []
    for seed in (1, 2, 3):
        from mmssl_pyg.training.device import seed_everything
        seed_everything(seed)
        state = rng_state()
        out.append((state, _draws()))
    return out


def test_restore_continues_each_processs_random_stream_or_seeds_a_fresh_one():
    (x, after_x), (y, after_y), (z, _) = _random_states()
    state = {**_trainer(script=None).state_dict(), 'epoch': 3, 'rng': x}
    trainer = _trainer(script=None)
    torch.manual_seed(99)
    trainer._restore(state)
    assert _draws() == after_x
    rank0 = _trainer(script=None, distributed=_Peers(rank=0), batches_per_epoch=2)
    rank0._restore({**state, 'rng_ranks': [y, z]})
    assert _draws() == after_x  # rank 0's stream is the checkpoint's own
    rank1 = _trainer(script=None, distributed=_Peers(rank=1), batches_per_epoch=2)
    rank1._restore({**state, 'rng_ranks': [x, y]})
    assert _draws() == after_y
    # saved by one process or by three: seed + 1_000_003 * rank + epoch
    for ranks in (None, [x, y, z]):
        extra = {} if ranks is None else {'rng_ranks': ranks}
        rank1._restore({**state, **extra})
        assert _draws() == _seeded(11 + 1_000_003 + 3), ranks
    rank2 = _trainer(script=None, distributed=_Peers(rank=2, world_size=3), batches_per_epoch=3)
    rank2._restore({**state, 'epoch': 5})
    assert _draws() == _seeded(11 + 2 * 1_000_003 + 5)


def test_restore_writes_best_pt_when_last_pt_is_the_best_and_best_pt_lags(tmp_path):
    def restored(folder, distributed=None, **fields):
        source = _trainer(script=None, meta={'v': 'new'})
        for k, v in {'epoch': 2, 'best_epoch': 2, **fields}.items():
            setattr(source, k, v)
        kw = {} if distributed is None else {'distributed': distributed,
                                             'batches_per_epoch': 2}
        _trainer(script=None, checkpoint_dir=folder, **kw)._restore(source.state_dict())
        return folder / 'best.pt'

    best = restored(tmp_path / 'missing')  # killed before best.pt was written
    assert load_checkpoint(best)['epoch'] == 2 and load_checkpoint(best)['meta'] == {'v': 'new'}
    for epoch, meta in ((1, {'v': 'new'}), (2, {'v': 'old'})):
        folder = tmp_path / f'best-of-{epoch}'
        folder.mkdir()
        save_checkpoint({'epoch': epoch, 'meta': {'v': 'old'}}, folder / 'best.pt')
        best = restored(folder)
        assert load_checkpoint(best)['meta'] == meta, epoch  # rewritten only when it lags
        assert load_checkpoint(best)['epoch'] == 2
    assert not restored(tmp_path / 'not-best', best_epoch=1).exists()
    assert not restored(tmp_path / 'rank1', distributed=_Peers(rank=1)).exists()
    assert restored(tmp_path / 'rank0', distributed=_Peers(rank=0)).exists()
    source = _trainer(script=None)
    source.epoch = source.best_epoch = 2
    _trainer(script=None)._restore(source.state_dict())  # no run folder: nothing to repair


class _Extra(_Toy):
    """A model with extra (non-tensor) state in its ``state_dict``."""

    def get_extra_state(self):
        return {'neighbours': [1, 2]}

    def set_extra_state(self, state):
        self.extra = state


def test_save_keeps_the_best_weights_in_memory_without_a_run_folder():
    trainer = _trainer(_Extra, script=None)
    trainer._save(False)
    assert trainer._best_state is None
    trainer._save(True)
    best = trainer._best_state
    assert set(best) == {'w', '_extra_state'} and best['w'].tolist() == [1.0, -1.0]
    assert not best['w'].requires_grad and best['w'].device.type == 'cpu'
    assert best['_extra_state'] == {'neighbours': [1, 2]}
    with torch.no_grad():
        trainer.model.w.add_(1.0)
    trainer.model.get_extra_state()['neighbours'].append(3)
    assert best['w'].tolist() == [1.0, -1.0]  # a copy, not the live weights
    trainer._save(False)
    assert trainer._best_state is best
    trainer._save(True)
    assert trainer._best_state['w'].tolist() == [2.0, 0.0]


def test_save_writes_last_pt_every_time_and_best_pt_when_improved(tmp_path):
    trainer = _trainer(script=None, checkpoint_dir=tmp_path)
    trainer.epoch = 1
    trainer._save(False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['last.pt']
    assert trainer._best_state is None
    trainer.epoch = 2
    trainer._save(True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['best.pt', 'last.pt']
    assert load_checkpoint(tmp_path / 'best.pt')['epoch'] == 2
    assert load_checkpoint(tmp_path / 'last.pt')['epoch'] == 2
    assert trainer._best_state is None  # on disk, not in memory
    peers = _Peers(rank=1)
    other = _trainer(script=None, checkpoint_dir=tmp_path / 'rank1', distributed=peers,
                     batches_per_epoch=2)
    other._save(True)
    assert not (tmp_path / 'rank1').exists() and peers.calls[-1] == ('all_gather_object',)
    main = _trainer(script=None, checkpoint_dir=tmp_path / 'rank0',
                    distributed=_Peers(rank=0), batches_per_epoch=2)
    main._save(True)
    assert sorted(p.name for p in (tmp_path / 'rank0').iterdir()) == ['best.pt', 'last.pt']


# ---------------------------------------------------------------------------------------------
# testing the best epoch


def test_testing_without_a_best_epoch_says_why_in_full():
    trainer = _trainer(script=None)
    with pytest.raises(RuntimeError) as err:
        trainer._test_best()
    assert str(err.value) == ('no validation evaluation took place, so there is no best epoch '
                              'to test (epochs must be >= 1)')
    trainer.history = [{'epoch': 1, 'val/recall@5': NAN}, {'epoch': 2},
                       {'epoch': 3, 'val/recall@2': 0.5, 'val/recall@5': -INF}]
    with pytest.raises(RuntimeError) as err:
        trainer._test_best()
    assert str(err.value) == ('validation recall@5 was not a number at any of the 2 '
                              'evaluation(s) (-inf at the last), so no epoch can be selected '
                              "to test; check that the model's embeddings are finite")


def test_testing_reloads_best_pt_and_evaluates_with_the_options(tmp_path, evaluations):
    fake = evaluations(test=0.75)
    trainer = _trainer(script=None, checkpoint_dir=tmp_path, exclude_val_at_test=True,
                       eval_batch_size=7)
    with torch.no_grad():
        trainer.model.w.copy_(torch.tensor([5.0, 6.0]))
    trainer.epoch = trainer.best_epoch = 2
    trainer._save(True)
    with torch.no_grad():
        trainer.model.w.copy_(torch.tensor([0.0, 0.0]))
    trainer._best_state = {'w': torch.tensor([9.0, 9.0])}  # the folder wins
    assert trainer._test_best() == _metrics(0.75)
    split, ks, kwargs, weights = fake.calls[-1]
    assert (split, ks, weights.tolist()) == ('test', (2, 5), [5.0, 6.0])
    assert kwargs == {'exclude_val_at_test': True, 'batch_size': 7, 'progress': False}
    assert fake.seen[-1] == (trainer.model, trainer.graph)
    trainer.best_epoch = 1
    with pytest.raises(RuntimeError) as err:
        trainer._test_best()
    assert str(err.value) == f'{tmp_path / "best.pt"} holds epoch 2, but the best epoch is 1'


def test_testing_without_a_run_folder_takes_the_best_weights_in_memory(evaluations):
    fake = evaluations()
    trainer = _trainer(script=None, progress=True)
    trainer.best_epoch = 3
    trainer._test_best()  # nothing kept: the current weights
    assert fake.calls[-1][3].tolist() == [1.0, -1.0]
    assert fake.calls[-1][2] == {'exclude_val_at_test': False, 'batch_size': 1024,
                                 'progress': True}
    trainer._best_state = {'w': torch.tensor([9.0, 8.0])}
    trainer._test_best()
    assert fake.calls[-1][3].tolist() == [9.0, 8.0]


def test_testing_in_a_process_group_waits_for_rank_0_and_evaluates_with_the_group(
        tmp_path, evaluations):
    fake = evaluations()
    peers = _Peers(rank=0)
    trainer = _trainer(script=None, checkpoint_dir=tmp_path, distributed=peers,
                       batches_per_epoch=2)
    trainer.epoch = trainer.best_epoch = 1
    trainer._save(True)
    peers.calls.clear()
    trainer._test_best()
    assert peers.names() == ['barrier', 'broadcast_object']
    assert fake.calls[-1][2]['distributed'] is peers


class _Fixed(Recommender):
    """Hand-set embeddings, no parameters."""
    trainable = False

    def __init__(self, graph):
        super().__init__(graph)
        _, user_emb, item_emb = exclusion_graph()
        self.register_buffer('u', user_emb)
        self.register_buffer('i', item_emb)

    def get_embedding(self):
        return self.u, self.i


@pytest.mark.parametrize('exclude', [True, False])
def test_the_test_ranking_excludes_the_validation_items_when_asked(exclude):
    """With the real evaluator (see :func:`exclusion_graph`): each user's top-1 is its
    validation item unless that is excluded too, when it is its test item."""
    graph = exclusion_graph()[0]
    config = TrainConfig(**{**BASE, 'ks': (1,), 'metric': 'recall@1',
                            'exclude_val_at_test': exclude})
    result = Trainer(_Fixed(graph), graph, config).fit()
    assert result.val == {'recall@1': 1.0, 'precision@1': 1.0, 'ndcg@1': 1.0, 'hit@1': 1.0}
    assert result.test['recall@1'] == (1.0 if exclude else 0.0)
    assert result.best_epoch == 1 and [h['epoch'] for h in result.history] == [1]


# ---------------------------------------------------------------------------------------------
# fit


def test_fit_by_hand(evaluations, clock):
    fake = evaluations([0.2, 0.4], test=0.3)
    tracker = MemoryTracker()
    trainer = _trainer(epochs=2, tracker=tracker, meta={'model': 'toy'})
    result = trainer.fit()
    val = {f'val/{k}': v for k, v in _metrics(0.2).items()}
    first = {'epoch': 1, 'train/loss': 3.0, 'train/size': 2.0, 'epoch_seconds': 7.0,
             'eval_seconds': 11.0, **val, 'peak_memory_mb': 7.5}
    val = {f'val/{k}': v for k, v in _metrics(0.4).items()}
    second = {'epoch': 2, 'train/loss': 3.0, 'train/size': 2.0, 'epoch_seconds': 15.0,
              'eval_seconds': 19.0, **val, 'peak_memory_mb': 7.5}
    assert result == FitResult(2, _metrics(0.4), _metrics(0.3), [first, second], False, None,
                               None)
    assert tracker.config == {'train': trainer.config.to_dict(), 'model': 'toy'}
    assert tracker.history == [(1, {k: v for k, v in first.items() if k != 'epoch'}),
                               (2, {k: v for k, v in second.items() if k != 'epoch'})]
    assert tracker.summary_['best_epoch'] == 2 and tracker.summary_['test/recall@5'] == 0.3
    assert [c[0] for c in fake.calls] == ['val', 'val', 'test']
    starts = [c for c in trainer.model.calls if c[0] in ('start', 'end')]
    assert starts == [('start', 1, True), ('end', 1), ('start', 2, True), ('end', 2)]
    assert trainer.sampler.drawn == 6 and trainer.epoch == 2


def test_fit_stops_after_patience_and_tests_the_best_epochs_weights(evaluations, bars):
    fake = evaluations([0.1, 0.3, 0.3, 0.2, 0.9])
    trainer = _trainer(epochs=10, patience=2, progress=True)
    result = trainer.fit()
    assert [h['epoch'] for h in result.history] == [1, 2, 3, 4]
    assert result.stopped_early is True and result.best_epoch == 2 and trainer.bad_evals == 2
    assert [c[0] for c in fake.calls] == ['val'] * 4 + ['test']
    assert torch.equal(fake.calls[-1][3], fake.calls[1][3])  # epoch 2's weights, kept
    assert not torch.equal(fake.calls[-1][3], fake.calls[3][3])
    epochs = bars[0]
    assert epochs.kwargs == {'dynamic_ncols': True, 'desc': 'epochs', 'unit': 'epoch',
                             'initial': 0, 'total': 10}
    assert epochs.items == list(range(1, 11)) and epochs.drawn == [1, 2, 3, 4, 5]
    assert epochs.closed
    assert epochs.postfix == [{'train/loss': '3', 'val/recall@5': v}
                              for v in ('0.1', '0.3', '0.3', '0.2')]
    assert [b.kwargs['desc'] for b in bars[1:]] == ['epoch 1', 'epoch 2', 'epoch 3', 'epoch 4']


def test_fit_evaluates_every_eval_every_epochs_and_the_last(evaluations):
    fake = evaluations([0.1, 0.2, 0.3])
    result = _trainer(epochs=5, eval_every=2).fit(test=False)
    assert [('val/recall@5' in h, 'eval_seconds' in h) for h in result.history] == \
        [(False, False), (True, True), (False, False), (True, True), (True, True)]
    assert result.best_epoch == 5 and result.test == {} and len(fake.calls) == 3


def test_fit_of_a_model_without_parameters_is_one_epoch(evaluations, clock, bars):
    evaluations([0.5], test=0.25)
    trainer = _trainer(_Frozen, epochs=5, progress=True)
    result = trainer.fit()
    val = {f'val/{k}': v for k, v in _metrics(0.5).items()}
    assert result.history == [{'epoch': 1, 'epoch_seconds': 7.0, 'eval_seconds': 11.0, **val,
                               'peak_memory_mb': 7.5}]
    assert result.best_epoch == 1 and result.test == _metrics(0.25)
    assert trainer.model.calls == [('start', 1), ('end', 1)] and trainer.sampler.drawn == 0
    assert bars[0].kwargs['total'] == 1 and bars[0].items == [1]


def test_fit_resumes_from_last_pt_to_the_uninterrupted_epochs(tmp_path, evaluations, bars):
    evaluations([0.2, 0.1])
    first = _trainer(epochs=2, checkpoint_dir=tmp_path)
    first.fit()
    w = first.model.w.detach().clone()
    evaluations([0.3, 0.05])
    trainer = _trainer(epochs=4, checkpoint_dir=tmp_path, progress=True)
    result = trainer.fit(resume=True)
    assert result.resumed_from_epoch == 2 and [h['epoch'] for h in result.history] == [1, 2, 3, 4]
    assert result.best_epoch == 3 and trainer.sampler.drawn == 12
    assert trainer.model.calls[0] == ('start', 3, True)
    assert bars[0].kwargs == {'dynamic_ncols': True, 'desc': 'epochs', 'unit': 'epoch',
                              'initial': 2, 'total': 4}
    assert bars[0].items == [3, 4]
    assert load_checkpoint(tmp_path / 'last.pt')['epoch'] == 4
    assert load_checkpoint(tmp_path / 'best.pt')['epoch'] == 3
    # the weights went on from the saved ones: three steps of about lr per epoch
    assert trainer.model.w.detach() - w == pytest.approx(torch.tensor([-0.006, -0.006]),
                                                          abs=1e-4)
