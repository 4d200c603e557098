"""Record the reference numbers of tests/models/test_grcn_mmgcn_speedup.py.

Run from the repository root, on the commit whose behaviour is the reference:

    python tests/models/_record_grcn_mmgcn.py > tests/models/grcn_mmgcn_reference.json

Trains GRCN and MMGCN on tiktok-mini with their presets (what ``mmssl-pyg train`` resolves),
fixed seed, CPU, one thread, 3 epochs of at most 3 mini-batches of 256 users, and prints the
per-epoch training losses, per-epoch validation metrics, best epoch and final embedding norms.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / 'training'))  # seeded_fit
from _grcn_mmgcn_run import MODELS, SHORT, run  # noqa: E402

from mmssl_pyg.data import RecGraph, load_dataset  # noqa: E402

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
