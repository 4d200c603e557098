"""Same seed, same numbers as before the issue-24 speed-ups of MMSSL's step (exact rewrites).

MMSSL is trained on tiktok-mini with its default preset (the options ``mmssl-pyg train
--model mmssl`` resolves) for three short epochs on CPU with one thread, once with the
preset's critic schedule and once with a critic step on every mini-batch. Every per-step
loss term of ``critic_loss`` and ``loss``, the validation metrics of every epoch and the
norms of the final embeddings are compared with constants. The constants were printed by
this file (``PYTHONPATH=tests/training python tests/models/test_speed_invariance.py``)
against the code *before* the speed-ups (branch speed-mmssl at 8130a2c), so they record the
previous implementation.
Three epochs cover two swaps of the generated modality graphs. Tolerance: rtol 1e-4 on
losses and norms (the rewrites change the order of float32 sums), abs 1e-6 on metrics.
"""
from __future__ import annotations

import json

import pytest
from test_training_utils import seeded_fit

from mmssl_pyg.data import RecGraph, load_dataset
from mmssl_pyg.models import MMSSL
from mmssl_pyg.training import resolve_options

SHORT = {'progress': False, 'device': 'cpu', 'num_threads': 1, 'epochs': 3,
         'batches_per_epoch': 4, 'batch_size': 256, 'ks': (20,), 'seed': 2023, 'patience': 0}
CONFIGS = {'preset': [], 'critic every step': ['critic_every=1']}

#: the terms each step returns, in the order of the recorded tuples
TERMS = {'critic': ('loss', 'critic', 'gradient_penalty'),
         'model': ('loss', 'bpr', 'reg', 'generator', 'contrastive')}
VAL_KEYS = ('val/recall@20', 'val/precision@20', 'val/ndcg@20', 'val/hit@20')
# Recorded at 8130a2c (before the speed-ups): per step (kind, *terms), per epoch the
# validation metrics (VAL_KEYS), and the final (user, item) embedding norms.
RECORDED: dict = {
    'preset': {
        'steps': [
            ('critic', 27.9628143, 0.00445336103, 93.1945343),
            ('model', 0.717962146, 0.687458456, 0.000853391713, -0.494829327, 10.0262604),
            ('model', 0.717684448, 0.687519312, 0.000716305338, -0.493966103, 9.95886707),
            ('model', 0.716071069, 0.686217427, 0.000759018003, -0.487991035, 9.83907413),
            ('model', 0.715538561, 0.686077178, 0.000627988775, -0.48993215, 9.75255489),
            ('model', 0.7188434, 0.686547995, 0.000565308612, -0.499806762, 10.7209969),
            ('model', 0.717786193, 0.685594678, 0.000580937311, -0.509903491, 10.6840343),
            ('model', 0.717425525, 0.685466886, 0.000578900217, -0.493010253, 10.6022339),
            ('model', 0.716998458, 0.685136795, 0.000501418137, -0.504664898, 10.5991039),
            ('model', 0.717140317, 0.68417275, 0.000471652194, -0.503216684, 10.9772263),
            ('model', 0.716441453, 0.683682024, 0.000483777025, -0.492789656, 10.9008064),
            ('model', 0.716164529, 0.683517456, 0.000473852851, -0.504622757, 10.8700781),
            ('model', 0.715518296, 0.683033824, 0.000437954383, -0.488423705, 10.8231525),
        ],
        'val': [
            (0.0178571429, 0.000892857178, 0.00627303852, 0.0178571429),
            (0.0208333333, 0.00104166674, 0.00758404965, 0.0208333333),
            (0.0327380952, 0.00163690497, 0.0102133705, 0.0327380952),
        ],
        'embedding_norms': [5.14094639, 5.154284],
    },
    'critic every step': {
        'steps': [
            ('critic', 27.9628143, 0.00445336103, 93.1945343),
            ('model', 0.717962146, 0.687458456, 0.000853391713, -0.494829327, 10.0262604),
            ('critic', 24.8995914, -0.00928449631, 83.0295868),
            ('model', 0.717676282, 0.687519312, 0.000716305338, -0.503382385, 9.95886707),
            ('critic', 15.2743359, -0.00433206558, 50.9288902),
            ('model', 0.716057301, 0.686218202, 0.000764216413, -0.504582345, 9.83728123),
            ('critic', 11.7956266, -0.0171872079, 39.3760452),
            ('model', 0.715549052, 0.686083138, 0.000643261999, -0.49378103, 9.75008869),
            ('critic', 8.53223705, -0.018309325, 28.5018215),
            ('model', 0.718827188, 0.686543584, 0.000573144061, -0.491585284, 10.712039),
            ('critic', 7.70928049, -0.017642498, 25.7564087),
            ('model', 0.717767537, 0.685552001, 0.000581700471, -0.485492885, 10.684762),
            ('critic', 5.64749336, 0.0133339167, 18.7805309),
            ('model', 0.717422426, 0.685448229, 0.000574579171, -0.489396542, 10.6078014),
            ('critic', 6.77507305, -0.0009958148, 22.586895),
            ('model', 0.717002392, 0.685124516, 0.000506048324, -0.479747713, 10.5957527),
            ('critic', 4.62303495, -0.0085991025, 15.4387798),
            ('model', 0.717155635, 0.684173346, 0.000476487447, -0.487495482, 10.9760036),
            ('critic', 5.68528938, -0.00596761703, 18.9708557),
            ('model', 0.716506124, 0.68367058, 0.000487592246, -0.488077313, 10.9235516),
            ('critic', 4.48894739, -0.0131376684, 15.0069504),
            ('model', 0.716068327, 0.683486462, 0.00047781528, -0.484812975, 10.8413048),
            ('critic', 3.89357233, -0.0243229568, 13.0596504),
            ('model', 0.715623379, 0.683027864, 0.00044024043, -0.485235274, 10.8585014),
        ],
        'val': [
            (0.0178571429, 0.000892857178, 0.00642981805, 0.0178571429),
            (0.0178571429, 0.000892857178, 0.0074754967, 0.0178571429),
            (0.0297619048, 0.00148809542, 0.0109583849, 0.0297619048),
        ],
        'embedding_norms': [5.14228868, 5.15446472],
    },
}


def _run(graph: RecGraph, overrides: list[str]) -> dict:
    options = resolve_options(MMSSL, 'tiktok-mini', model_name='mmssl', train_updates=SHORT,
                              overrides=overrides)
    steps: list[dict] = []

    def spy(kind, fn):
        def wrapped(batch):
            out = fn(batch)
            steps.append({'kind': kind, **{k: float(v.detach()) for k, v in out.items()}})
            return out
        return wrapped

    def build() -> MMSSL:
        model = MMSSL(graph, **options.model_kwargs)
        model.critic_loss = spy('critic', model.critic_loss)
        model.loss = spy('model', model.loss)
        return model

    result, norms = seeded_fit(build, graph, options.train)
    return {'steps': steps,
            'val': [{k: v for k, v in h.items() if k.startswith('val/')}
                    for h in result.history],
            'embedding_norms': norms}


@pytest.fixture(scope='module')
def mini() -> RecGraph:
    return RecGraph.from_hetero(load_dataset('tiktok-mini')[0], name='tiktok-mini')


@pytest.mark.parametrize('config', list(CONFIGS))
def test_same_seed_same_numbers_as_before_the_speed_ups(mini, config):
    got, want = _run(mini, CONFIGS[config]), RECORDED[config]
    assert [s['kind'] for s in got['steps']] == [s[0] for s in want['steps']]
    for i, (g, (kind, *values)) in enumerate(zip(got['steps'], want['steps'])):
        assert set(g) == {'kind', *TERMS[kind]}, i
        for key, value in zip(TERMS[kind], values):
            assert g[key] == pytest.approx(value, rel=1e-4, abs=1e-7), (i, key)
    assert [list(g) for g in got['val']] == [list(VAL_KEYS)] * len(want['val'])
    for g, w in zip(got['val'], want['val']):
        for key, value in zip(VAL_KEYS, w):
            assert g[key] == pytest.approx(value, abs=1e-6), key
    assert got['embedding_norms'] == pytest.approx(want['embedding_norms'], rel=1e-4)

if __name__ == '__main__':  # print the record (run against the code to be recorded)
    graph = RecGraph.from_hetero(load_dataset('tiktok-mini')[0], name='tiktok-mini')
    print(json.dumps({name: _run(graph, ov) for name, ov in CONFIGS.items()}, indent=1))
