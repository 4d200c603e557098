"""wandb offline logging, read back from the run's ``.wandb`` file (no network)."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from test_training_utils import write_json_dataset

from mmssl_pyg import cli
from mmssl_pyg.training import NullTracker, make_tracker

pytest.importorskip('wandb')


def read_wandb_file(path: Path) -> dict:
    """Records of a ``run-<id>.wandb`` file: the LevelDB-style log that wandb writes (a 7-byte
    header, then 32 KiB blocks of ``crc32 | length | type`` chunks, each record a protobuf
    ``Record``). Returns ``{'config', 'history' (list), 'summary', 'run'}``."""
    from wandb.proto import wandb_internal_pb2 as pb
    data = path.read_bytes()
    ident, magic, version = struct.unpack('<4sHB', data[:7])
    assert ident == b':W&B' and magic == 0xBEE1, 'not a .wandb file'
    block, pos, records, pending = 32768, 7, [], b''
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack('<IHB', data[pos:pos + 7])
        if length == 0 and kind == 0:
            break
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 1:                      # FULL
            records.append(chunk)
        elif kind == 2:                    # FIRST
            pending = chunk
        elif kind == 3:                    # MIDDLE
            pending += chunk
        elif kind == 4:                    # LAST
            records.append(pending + chunk)
    out = {'config': {}, 'history': [], 'summary': {}, 'run': None}
    for raw in records:
        rec = pb.Record()
        rec.ParseFromString(raw)
        which = rec.WhichOneof('record_type')
        if which == 'run':
            out['run'] = rec.run
            out['config'].update({i.key: json.loads(i.value_json) for i in rec.run.config.update})
        elif which == 'config':
            out['config'].update({i.key: json.loads(i.value_json) for i in rec.config.update})
        elif which == 'history':
            out['history'].append({i.key or '/'.join(i.nested_key): json.loads(i.value_json)
                                   for i in rec.history.item})
        elif which == 'summary':
            out['summary'].update({i.key or '/'.join(i.nested_key): json.loads(i.value_json)
                                   for i in rec.summary.update})
    return out


@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    for var in ('WANDB_CACHE_DIR', 'WANDB_CONFIG_DIR', 'WANDB_DATA_DIR'):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    monkeypatch.delenv('WANDB_MODE', raising=False)
    monkeypatch.delenv('WANDB_API_KEY', raising=False)
    monkeypatch.setenv('WANDB_SILENT', 'true')


# Seeds of the run: the default (2023, best epoch 2 of 2), 3 (best epoch 1 of 2: the last
# history row is not the selected one) and 11.
@pytest.mark.parametrize('seed', [None, 3, 11])
def test_offline_run_logs_config_epochs_and_test_summary(tmp_path, wandb_env, seed):
    data = write_json_dataset(tmp_path / 'tiny', num_users=60, num_items=60, per_user=8)
    run = tmp_path / 'run'
    argv = ['train', '--model', 'lightgcn', '--dataset', str(data), '--epochs', '2',
            '--run-dir', str(run), '--no-progress', 'num_threads=1', 'embedding_dim=8',
            'batch_size=32']  # --wandb defaults to offline
    if seed is not None:
        argv[1:1] = ['--seed', str(seed)]
    assert cli.main(argv) == 0
    # run.finish() can return before wandb-core has flushed the offline .wandb file; teardown
    # (what wandb's atexit hook does when the CLI process exits) waits for it.
    import wandb
    wandb.teardown()
    files = list((run / 'wandb').glob('offline-run-*/run-*.wandb'))
    assert len(files) == 1
    logged = read_wandb_file(files[0])
    metrics = json.loads((run / 'metrics.json').read_text())

    assert logged['run'].display_name == 'run'
    cfg = logged['config']
    assert cfg['model'] == 'lightgcn' and cfg['dataset'] == str(data)
    assert cfg['model_kwargs']['embedding_dim'] == 8 and cfg['train']['batch_size'] == 32

    steps = [h for h in logged['history'] if 'train/loss' in h]
    assert [h['_step'] for h in steps] == [1, 2]
    for h, want in zip(steps, metrics['history']):
        for key in ('train/loss', 'train/bpr', 'train/reg', 'val/recall@20', 'val/ndcg@50',
                    'epoch_seconds', 'eval_seconds', 'peak_memory_mb'):
            assert h[key] == pytest.approx(want[key]), key

    # the summary holds the selected epoch's validation metrics (from its history row) and
    # the test metrics, also when a later epoch was logged after it
    summary = logged['summary']
    best = metrics['best_epoch']
    if seed == 3:  # the precondition this seed is here for
        assert best < len(steps)
        assert steps[-1]['val/recall@20'] != steps[best - 1]['val/recall@20']
    assert summary['best_epoch'] == best
    for k, v in metrics['test'].items():
        assert summary[f'test/{k}'] == pytest.approx(v)
    selected = steps[best - 1]
    val_keys = [k for k in selected if k.startswith('val/')]
    assert len(val_keys) == 12  # recall, precision, ndcg, hit at 10, 20 and 50
    for k in val_keys:
        assert summary[k] == pytest.approx(selected[k]), k
        assert summary[k] == pytest.approx(metrics['val'][k[4:]]), k
    # config.yaml records the id, so --resume continues the same wandb run
    assert f'wandb_id: {logged["run"].run_id}' in (run / 'config.yaml').read_text()


def test_disabled_mode_uses_the_null_tracker(tmp_path):
    assert isinstance(make_tracker('disabled', dir=tmp_path), NullTracker)
    assert not any(tmp_path.iterdir())
    with pytest.raises(ValueError, match='--wandb must be one of'):
        make_tracker('sometimes')
