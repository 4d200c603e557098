"""Shared training and evaluation: :class:`Trainer`, :func:`evaluate`, checkpoints, tracking.

Typical use::

    from mmssl_pyg.training import Trainer, TrainConfig, evaluate
    result = Trainer(model, graph, TrainConfig(lr=1e-3, epochs=50)).fit()
    print(result.best_epoch, result.val['recall@20'], result.test['recall@20'])
"""
from .checkpoint import load_checkpoint, save_checkpoint
from .device import peak_memory_mb, resolve_device, seed_everything
from .evaluator import DEFAULT_KS, evaluate, evaluate_embeddings
from .options import ConfigError, TrainConfig
from .presets import resolve_options
from .run import from_preset
from .sampler import BPRSampler
from .seeding import pair_id_embeddings
from .tracking import (
    BudgetTracker,
    MemoryTracker,
    NullTracker,
    Tracker,
    WandbTracker,
    make_tracker,
)
from .trainer import FitResult, NonFiniteLossError, Trainer

__all__ = [
    'Trainer', 'TrainConfig', 'FitResult', 'NonFiniteLossError', 'evaluate',
    'evaluate_embeddings', 'DEFAULT_KS', 'BPRSampler', 'ConfigError', 'resolve_options',
    'from_preset',
    'save_checkpoint', 'load_checkpoint', 'Tracker', 'NullTracker', 'MemoryTracker',
    'WandbTracker', 'BudgetTracker', 'make_tracker', 'pair_id_embeddings', 'resolve_device',
    'seed_everything', 'peak_memory_mb',
]
