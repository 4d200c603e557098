"""The short training run whose numbers tests/models/test_grcn_mmgcn_speedup.py compares
(shared with the recorder, tests/models/_record_grcn_mmgcn.py)."""
from __future__ import annotations

from test_training_utils import seeded_fit

from mmssl_pyg.data import RecGraph
from mmssl_pyg.models import get_model_class
from mmssl_pyg.training import resolve_options

MODELS = ('grcn', 'mmgcn')
SHORT = {'progress': False, 'device': 'cpu', 'num_threads': 1, 'epochs': 3,
         'batches_per_epoch': 3, 'batch_size': 256, 'ks': (20,), 'seed': 2023,
         'patience': 0}


def run(name: str, graph: RecGraph) -> dict:
    """Per-epoch train losses and validation metrics, best epoch and final embedding norms of
    ``name`` trained on ``graph`` (tiktok-mini) with :data:`SHORT` over its preset."""
    cls = get_model_class(name)
    options = resolve_options(cls, 'tiktok-mini', model_name=name, train_updates=SHORT)
    result, norms = seeded_fit(lambda: cls(graph, **options.model_kwargs), graph,
                               options.train)
    return {'losses': [h['train/loss'] for h in result.history],
            'val': [{k[4:]: v for k, v in h.items() if k.startswith('val/')}
                    for h in result.history],
            'best_epoch': result.best_epoch,
            'embedding_norms': norms}
