"""Record the reference numbers of the GRCN/MMGCN speed-up test
(``test_same_numbers_as_the_recorded_implementation`` in tests/models/test_refactor_invariance.py;
the run is ``mmssl_pyg.testing.grcn_mmgcn_run``).

Run from the repository root, on the commit whose behaviour is the reference:

    PYTHONPATH=. python tests/models/_record_grcn_mmgcn.py > tests/models/grcn_mmgcn_reference.json

Trains GRCN and MMGCN on tiktok-mini with their presets (what ``mmssl-pyg train`` resolves),
fixed seed, CPU, one thread, 3 epochs of at most 3 mini-batches of 256 users, and prints the
per-epoch training losses, per-epoch validation metrics, best epoch and final embedding norms.
"""
from __future__ import annotations

import json
import subprocess

import torch

from mmssl_pyg.data import RecGraph, load_dataset
from mmssl_pyg.testing import GRCN_MMGCN as MODELS
from mmssl_pyg.testing import GRCN_MMGCN_SHORT as SHORT
from mmssl_pyg.testing import grcn_mmgcn_run as run

if __name__ == '__main__':
    graph = RecGraph.from_hetero(load_dataset('tiktok-mini')[0], name='tiktok-mini')
    commit = subprocess.run(['git', 'rev-parse', 'HEAD'], capture_output=True, text=True,
                            check=True).stdout.strip()
    dirty = bool(subprocess.run(['git', 'status', '--porcelain', '--', 'mmssl_pyg'],
                                capture_output=True, text=True, check=True).stdout.strip())
    out = {'commit': commit + ('+dirty' if dirty else ''), 'torch': torch.__version__,
           'settings': {k: list(v) if isinstance(v, tuple) else v for k, v in SHORT.items()},
           'models': {name: run(name, graph) for name in MODELS}}
    print(json.dumps(out, indent=1))
