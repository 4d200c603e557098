"""The short training run whose numbers tests/models/test_grcn_mmgcn_speedup.py compares
(shared with the recorder, tests/models/_record_grcn_mmgcn.py)."""
from __future__ import annotations

import torch

from mmssl_pyg.data import RecGraph
from mmssl_pyg.models import get_model_class
from mmssl_pyg.training import Trainer, resolve_options

MODELS = ('grcn', 'mmgcn')
SHORT = {'progress': False, 'device': 'cpu', 'num_threads': 1, 'epochs': 3,
         'batches_per_epoch': 3, 'batch_size': 256, 'ks': (20,), 'seed': 2023,
         'patience': 0}


def run(name: str, graph: RecGraph, prepare=None) -> dict:
    """Per-epoch train losses and validation metrics, best epoch and final embedding norms of
    ``name`` trained on ``graph`` (tiktok-mini) with :data:`SHORT` over its preset;
    ``prepare(model)``, when given, runs on the freshly built model before training."""
    cls = get_model_class(name)
    options = resolve_options(cls, 'tiktok-mini', model_name=name, train_updates=SHORT)
    threads = torch.get_num_threads()
    try:
        torch.manual_seed(options.train.seed)
        model = cls(graph, **options.model_kwargs)
        if prepare is not None:
            prepare(model)
        result = Trainer(model, graph, options.train).fit(test=False)
        model.eval()
        with torch.no_grad():
            user, item = model.get_embedding()
    finally:
        torch.set_num_threads(threads)
    return {'losses': [h['train/loss'] for h in result.history],
            'val': [{k[4:]: v for k, v in h.items() if k.startswith('val/')}
                    for h in result.history],
            'best_epoch': result.best_epoch,
            'embedding_norms': [float(user.norm()), float(item.norm())]}
