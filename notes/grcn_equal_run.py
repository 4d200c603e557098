"""`mmssl-pyg train --model grcn --dataset tiktok` without the test split.

Runs the CLI's own path (mmssl_pyg.training.run.train_run with the preset, wandb disabled, no
progress bars) with Trainer.fit(test=False), so the best epoch is never tested; writes the
per-epoch history (training loss, validation metrics, epoch seconds) to <run-dir>/history.json.

    OMP_NUM_THREADS=1 python notes/grcn_equal_run.py RUN_DIR [EPOCHS] [DATASET]

Controls: THREADS=2 trains on two threads (a round-off change only); FLOAT64=1 trains the whole
model in float64 (default dtype and model.double() before the first epoch).
"""
import json
import os
import sys
from pathlib import Path

import torch

import mmssl_pyg
from mmssl_pyg.training import trainer as trainer_module
from mmssl_pyg.training.run import train_run

run_dir = Path(sys.argv[1])
epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 6
dataset = sys.argv[3] if len(sys.argv) > 3 else 'tiktok'
threads = os.environ.get('THREADS', '1')
float64 = os.environ.get('FLOAT64') == '1'
if float64:
    torch.set_default_dtype(torch.float64)
fit = trainer_module.Trainer.fit


def fit_without_test(self, resume=False, test=True):
    if float64:
        self.model.double()  # parameters keep their identity: the optimiser still holds them
    return fit(self, resume, test=False)


trainer_module.Trainer.fit = fit_without_test
result = train_run(model='grcn', dataset=dataset,
                   overrides=[f'num_threads={threads}', 'patience=1000'],
                   epochs=epochs, seed=2023, device='cpu', run_dir=run_dir, wandb='disabled',
                   progress=False, force=True)
out = {'module': mmssl_pyg.__file__, 'threads': threads, 'float64': float64,
       'history': result.fit.history}
(run_dir / 'history.json').write_text(json.dumps(out, indent=1))
print(json.dumps(out['module']))
for h in result.fit.history:
    print(h['epoch'], h['train/loss'], h.get('val/recall@20'), h.get('val/ndcg@20'),
          round(h['epoch_seconds'], 2))
