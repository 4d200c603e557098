"""Tests of ``mmssl_pyg/cli.py``.

The ``mmssl-pyg`` command line, in-process, on a tiny dataset in the MMSSL JSON format.

Mixed precision (``TrainConfig.precision``) as far as a CPU can test it: bf16 autocast
trains, fp16 is refused with the fix, and the critic's gradient penalty stays float32.

Adversarial options: every option is typed and bounded in one place (a trainer option in
``mmssl_pyg.training.options.OPTION_RULES``, a model option in its constructor's signature,
``mmssl_pyg.utils.options``); a bad value ends in one
``mmssl-pyg <command>: error:`` line naming the option and the value, exit status 2, before
anything is loaded or written."""
from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mmssl_pyg import cli
from mmssl_pyg.testing import (
    STUDY_DEFAULTS,
    assert_user_error,
    read_json_dataset,
    run_cli,
    write_json_dataset,
)
from mmssl_pyg.testing import FAST_adversarial as ADV_FAST

FAST = ['--model', 'lightgcn', '--epochs', '2', '--wandb', 'disabled', '--no-progress',
        '--device', 'cpu', 'num_threads=1', 'embedding_dim=8', 'batch_size=64']


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """One finished run shared by the evaluate / recommend tests."""
    tmp = tmp_path_factory.mktemp('cli')
    data = write_json_dataset(tmp / 'tiny')
    run = tmp / 'run'
    assert cli.main(['train', '--dataset', str(data), '--run-dir', str(run), *FAST]) == 0
    return data, run


@pytest.fixture(scope='module')
def tiny(tmp_path_factory) -> Path:
    """120 users, 80 items (every item used)."""
    return write_json_dataset(tmp_path_factory.mktemp('opts') / 'tiny')


@pytest.fixture(scope='module')
def opts_run(tiny, tmp_path_factory):
    run = tmp_path_factory.mktemp('opts-run') / 'run'
    from mmssl_pyg import cli
    assert cli.main(['train', '--dataset', str(tiny), '--run-dir', str(run), *ADV_FAST]) == 0
    return run


def test_train_prints_table_and_writes_run_folder(trained, capsys):
    data, run = trained
    metrics = json.loads((run / 'metrics.json').read_text())
    assert {'best_epoch', 'val', 'test', 'history', 'model_kwargs', 'train'} <= set(metrics)
    assert metrics['model'] == 'lightgcn' and metrics['epochs_run'] == 2
    # the preset's default block (PROTOCOL.md Sec. 8) under the fixture's embedding_dim=8
    assert metrics['model_kwargs'] == {'embedding_dim': 8, **STUDY_DEFAULTS['lightgcn'][0]}
    assert metrics['train']['batch_size'] == 64 and metrics['train']['epochs'] == 2
    assert set(metrics['test']) >= {'recall@10', 'recall@20', 'recall@50', 'ndcg@20'}
    assert {p.name for p in run.iterdir()} >= {'best.pt', 'last.pt', 'metrics.json',
                                               'config.yaml'}
    assert not (run / 'wandb').exists()  # --wandb disabled writes nothing
    # printing happened in the fixture; rerun the table formatting through the library
    from mmssl_pyg.training.recommend import format_metrics
    table = format_metrics({'val': metrics['val'], 'test': metrics['test']})
    assert 'test recall' in table and '@50' in table


def test_train_output_and_default_run_dir(tmp_path, monkeypatch, capsys):
    # 60 items: the default cut-offs (up to 50) may not exceed the item count
    data = write_json_dataset(tmp_path / 'tiny', num_users=40, num_items=60, per_user=6)
    monkeypatch.chdir(tmp_path)
    assert cli.main(['train', '--dataset', str(data), *FAST, '--epochs', '1']) == 0
    out = capsys.readouterr().out
    assert 'best epoch 1 of 1' in out
    for row in ('val recall', 'val ndcg', 'test recall', 'test precision', 'test hit'):
        assert row in out
    assert '@10' in out and '@20' in out and '@50' in out
    runs = list((tmp_path / 'runs').iterdir())
    assert len(runs) == 1 and runs[0].name.startswith('lightgcn-tiny-')
    assert (runs[0] / 'metrics.json').is_file()


def test_evaluate_checkpoint_matches_training_metrics(trained, capsys):
    data, run = trained
    metrics = json.loads((run / 'metrics.json').read_text())
    assert cli.main(['evaluate', str(run / 'best.pt'), '--split', 'test', '--json',
                     '--device', 'cpu']) == 0
    out = json.loads(capsys.readouterr().out)
    assert out['epoch'] == metrics['best_epoch']
    assert out['metrics'] == pytest.approx(metrics['test'])
    assert cli.main(['evaluate', str(run), '--split', 'val', '--ks', '5,20',
                     '--device', 'cpu']) == 0
    text = capsys.readouterr().out
    assert 'val recall' in text and '@5' in text and '@50' not in text


def test_recommend_to_stdout_and_csv(trained, tmp_path, capsys):
    data, run = trained
    graph = read_json_dataset(data)
    seen = {}
    for u, i in graph.train_edge_index.t().tolist():
        seen.setdefault(u, set()).add(i)
    assert cli.main(['recommend', str(run), '--users', '0,3', '-k', '5']) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == 'user\titems' and len(lines) == 3
    for line in lines[1:]:
        user, items = line.split('\t')
        items = [int(i) for i in items.split()]
        assert len(items) == 5 and not set(items) & seen[int(user)]  # unseen items only
    out = tmp_path / 'rec.csv'
    assert cli.main(['recommend', str(run / 'best.pt'), '--output', str(out), '-k', '3']) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == graph.num_users * 3
    assert rows[0].keys() == {'user', 'rank', 'item', 'score'}
    first = [r for r in rows if r['user'] == '0']
    assert [r['rank'] for r in first] == ['1', '2', '3']
    assert [int(r['item']) for r in first] == [int(i) for i in lines[1].split('\t')[1].split()[:3]]
    assert float(first[0]['score']) >= float(first[1]['score'])


def test_parquet_without_pyarrow_names_the_fix(trained, tmp_path, capsys, monkeypatch):
    import sys
    for name in ('pyarrow', 'pyarrow.parquet'):
        monkeypatch.setitem(sys.modules, name, None)  # as if pyarrow were not installed
    _, run = trained
    assert cli.main(['recommend', str(run), '--output', str(tmp_path / 'r.parquet')]) == 2
    err = capsys.readouterr().err
    assert 'pip install pyarrow' in err and not (tmp_path / 'r.parquet').exists()


@pytest.mark.skipif(importlib.util.find_spec('pyarrow') is None, reason='needs pyarrow')
def test_parquet_output(trained, tmp_path):
    import pyarrow.parquet as pq
    _, run = trained
    assert cli.main(['recommend', str(run), '--output', str(tmp_path / 'r.parquet'),
                     '-k', '2']) == 0
    table = pq.read_table(tmp_path / 'r.parquet')
    assert table.column_names == ['user', 'rank', 'item', 'score']


@pytest.mark.parametrize('argv,needle', [
    (['train', 'embeding_dim=8'], "'embeding_dim'"),
    (['train', 'lr'], 'key=value'),
    (['train', '--model', 'nope'], "unknown model 'nope'"),
    (['train', '--config', 'missing.yaml'], 'missing.yaml'),
    (['train', '--resume'], '--run-dir'),
    (['recommend', 'run', '--users', '1', '-k', '0'], '-k expects an integer >= 1, got 0'),
    (['recommend', 'run', '--output', 'x.txt'], 'use .csv or .parquet'),
    (['evaluate', 'no/such/best.pt'], 'no/such/best.pt'),
])
def test_bad_arguments_fail_naming_them(argv, needle, trained, capsys, monkeypatch):
    data, _ = trained
    if argv[0] == 'train':
        argv = [*argv, '--dataset', str(data), '--wandb', 'disabled']
        if '--model' not in argv:
            argv += ['--model', 'lightgcn']
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err, err


def test_unknown_key_lists_valid_keys(trained, capsys):
    data, _ = trained
    assert cli.main(['train', '--model', 'lightgcn', '--dataset', str(data), 'bogus=1',
                     '--wandb', 'disabled']) == 2
    err = capsys.readouterr().err
    assert "'bogus'" in err and 'embedding_dim' in err and 'patience' in err


def test_argparse_rejects_bad_choices(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(['train', '--device', 'gpu'])
    assert info.value.code == 2
    assert "--device: invalid choice: 'gpu'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(['recommend', 'run'])  # --users or --output is required


def test_resume_refuses_changed_settings_and_continues_a_finished_run(trained, capsys):
    data, run = trained
    assert cli.main(['train', '--dataset', str(data), '--run-dir', str(run), *FAST]) == 2
    assert 'already holds a run' in capsys.readouterr().err  # never overwritten silently
    assert cli.main(['train', '--resume', '--run-dir', str(run), 'lr=0.5']) == 2
    assert 'train.lr' in capsys.readouterr().err
    before = json.loads((run / 'metrics.json').read_text())
    assert cli.main(['train', '--resume', '--run-dir', str(run), '--no-progress']) == 0
    assert 'resumed' in capsys.readouterr().out
    after = json.loads((run / 'metrics.json').read_text())
    assert after['test'] == before['test'] and after['best_epoch'] == before['best_epoch']


def test_datasets_command_is_wired_to_the_data_package(monkeypatch, capsys):
    import mmssl_pyg.data as data
    calls = []
    monkeypatch.setattr(data, 'datasets_command',
                        lambda names, root, force_reload=False:
                        calls.append((names, root)) or 'TABLE')
    assert cli.main(['datasets', 'tiktok', '--root', 'somewhere']) == 0
    assert calls == [(['tiktok'], 'somewhere')] and capsys.readouterr().out == 'TABLE\n'
    assert cli.main(['datasets']) == 0 and calls[-1] == (None, None)


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 0
    assert 'train' in capsys.readouterr().out


def test_recommend_excluding_all_known_items(trained):
    from mmssl_pyg.training.recommend import recommend
    from mmssl_pyg.training.run import load_run_checkpoint
    data, run = trained
    model, graph, _ = load_run_checkpoint(run, 'cpu')
    users, items, _ = recommend(model, graph, torch.arange(5), k=4, exclude='all')
    known = torch.cat([graph.train_edge_index, graph.val_edge_index, graph.test_edge_index], 1)
    pairs = set(map(tuple, known.t().tolist()))
    assert all((u, i) not in pairs for u, row in zip(users.tolist(), items.tolist())
               for i in row)


def test_train_sizes_the_mmssl_critic_check_with_the_trainer_batch(tmp_path, monkeypatch):
    """The critic memory check must see the batch size the trainer will use."""
    import mmssl_pyg.models.mmssl as mmssl_module
    seen = []
    real_check = mmssl_module.check_critic_memory

    def spy(num_items, rows, *args, **kwargs):
        seen.append(rows)
        return real_check(num_items, rows, *args, **kwargs)

    monkeypatch.setattr(mmssl_module, 'check_critic_memory', spy)
    data = write_json_dataset(tmp_path / 'tiny')
    rng = np.random.default_rng(0)
    for name, dim in (('image', 4), ('audio', 3)):  # 80 items, as write_json_dataset makes
        np.save(data / 'raw' / f'{name}_feat.npy', rng.normal(size=(80, dim)).astype('float32'))
    argv = ['train', '--model', 'mmssl', '--dataset', str(data), '--run-dir',
            str(tmp_path / 'run'), '--epochs', '1', '--wandb', 'disabled', '--no-progress',
            '--device', 'cpu', 'num_threads=1', 'embedding_dim=8', 'batch_size=48']
    assert cli.main(argv) == 0
    assert seen and seen[0] == 2 * 48  # two modalities x the trainer's batch of users


def test_compare_two_runs_user_by_user(trained, tmp_path, capsys):
    data, run = trained
    other = tmp_path / 'other'
    assert cli.main(['train', '--dataset', str(data), '--run-dir', str(other), *FAST,
                     '--seed', '7']) == 0
    capsys.readouterr()
    assert cli.main(['compare', str(run), str(other), '--json', '--resamples', '200']) == 0
    out = json.loads(capsys.readouterr().out)
    # the per-user means are the evaluator's test Recall@20 of each run's selected epoch
    for key, folder in (('mean_a', run), ('mean_b', other)):
        metrics = json.loads((folder / 'metrics.json').read_text())
        assert out[key] == pytest.approx(metrics['test']['recall@20'], abs=1e-6)
    assert out['mean_difference'] == pytest.approx(out['mean_a'] - out['mean_b'], abs=1e-9)
    assert out['low'] <= out['mean_difference'] <= out['high'] and 0 <= out['p_value'] <= 1
    # a run against itself: no user differs
    assert cli.main(['compare', str(run), str(run), '--metric', 'ndcg@10']) == 0
    text = capsys.readouterr().out
    assert 'A - B = +0.0000' in text and 'p = 1 (0 users differ)' in text
    assert cli.main(['compare', str(run), str(other), '--metric', 'hit@20']) == 2
    assert '--metric must be recall@K or ndcg@K' in capsys.readouterr().err


def test_cli_refuses_fp16_on_cpu_before_loading_data(tmp_path, capsys):
    from mmssl_pyg import cli
    argv = ['train', '--model', 'lightgcn', '--dataset', str(tmp_path / 'absent'), '--device',
            'cpu', '--precision', 'fp16', '--wandb', 'disabled', '--run-dir',
            str(tmp_path / 'run')]
    assert cli.main(argv) == 2
    assert 'fp16 needs a CUDA GPU' in capsys.readouterr().err
    assert not (tmp_path / 'run').exists()


def test_ks_beyond_the_item_count_is_an_error(tiny, tmp_path, capsys):
    run = tmp_path / 'run'
    code, _, err = run_cli(['train', '--dataset', tiny, '--run-dir', run, *ADV_FAST,
                            'ks=[10,20,100]'], capsys)
    assert_user_error(code, err, 'ks [100] exceed the number of items (80)')
    assert not run.exists()


@pytest.mark.parametrize('flag,value,needle', [
    ('--epochs', '1.5', "invalid int value: '1.5'"),
    ('--seed', 'abc', "invalid int value: 'abc'"),
    ('--device', 'gpu', "invalid choice: 'gpu'"),
    ('--precision', 'fp8', "invalid choice: 'fp8'"),
    ('--wandb', 'sometimes', "invalid choice: 'sometimes'"),
])
def test_bad_typed_flags_are_argparse_errors(flag, value, needle, tiny, capsys):
    code, _, err = run_cli(['train', '--dataset', tiny, flag, value], capsys)
    assert_user_error(code, err, needle)


def test_overrides_placed_after_options_are_applied(tiny, tmp_path, capsys):
    run = tmp_path / 'run'
    code, _, err = run_cli(['train', '--model', 'lightgcn', 'embedding_dim=8', '--epochs', '1',
                            '--dataset', tiny, 'lr=0.02', '--run-dir', run, '--wandb',
                            'disabled', '--no-progress', 'batch_size=64', '--device', 'cpu',
                            'num_threads=1'], capsys)
    assert code == 0, err
    metrics = json.loads((run / 'metrics.json').read_text())
    assert metrics['model_kwargs']['embedding_dim'] == 8
    assert metrics['train']['lr'] == 0.02 and metrics['train']['batch_size'] == 64


@pytest.mark.parametrize('argv,needle', [
    (['train', '--bogus'], 'unrecognized arguments: --bogus'),
    (['train', 'notakeyvalue'], 'must look like key=value'),
    (['evaluate', 'run', 'lr=1'], 'unrecognized arguments: lr=1'),
    (['datasets', '--nope'], 'unrecognized arguments: --nope'),
])
def test_stray_arguments_are_errors(argv, needle, tiny, capsys):
    if argv[0] == 'train':
        argv = [*argv, '--dataset', str(tiny), '--wandb', 'disabled']
    code, _, err = run_cli(argv, capsys)
    assert_user_error(code, err, needle)


@pytest.mark.parametrize('ks,needle', [
    ('', "argument --ks: expects a list of integers >= 1, got ''"),
    ('abc', "argument --ks: each value expects an integer >= 1, got 'abc'"),
    ('0', 'got 0'),
    ('10,10', 'lists a value more than once: [10, 10]'),
    ('5,200', '--ks [200] exceed the number of items (80)'),
])
def test_evaluate_bad_ks(ks, needle, opts_run, capsys):
    code, _, err = run_cli(['evaluate', opts_run, '--ks', ks, '--device', 'cpu'], capsys)
    assert_user_error(code, err, needle)


def test_evaluate_ks_at_the_item_count_is_accepted(opts_run, capsys):
    code, out, err = run_cli(['evaluate', opts_run, '--ks', '80', '--json', '--device', 'cpu'],
                             capsys)
    assert code == 0, err
    metrics = json.loads(out)['metrics']
    assert metrics['recall@80'] == pytest.approx(1.0)  # every unseen item is ranked


@pytest.mark.parametrize('args,needle', [
    (['--users', ''], "argument --users: expects a list of integers >= 0, got ''"),
    (['--users='], "argument --users: expects a list of integers >= 0, got ''"),
    (['--users', 'a,b'], "argument --users: each value expects an integer >= 0, got 'a'"),
    (['--users', '-1'], 'argument --users: each value expects an integer >= 0, got -1'),
    (['--users', '1,1'], 'lists a value more than once: [1, 1]'),
    (['--users', '99999'], 'user ids [99999] are out of range'),
    (['--users', '1', '-k', '0'], '-k expects an integer >= 1, got 0'),
    (['--users', '1', '-k', '-3'], '-k expects an integer >= 1, got -3'),
    (['--users', '1', '-k', '81'], '-k [81] exceed the number of items (80)'),
    (['--users', '1', '-k', 'x'], "argument -k/--k: invalid int value: 'x'"),
])
def test_recommend_bad_users_and_k(args, needle, opts_run, capsys):
    code, _, err = run_cli(['recommend', opts_run, *args, '--device', 'cpu'], capsys)
    assert_user_error(code, err, needle)


def test_recommend_k_equal_to_the_item_count_lists_every_unseen_item(opts_run, tiny, capsys):
    code, out, err = run_cli(['recommend', opts_run, '--users', '0', '-k', '80'], capsys)
    assert code == 0, err
    train = json.loads((tiny / 'raw' / 'train.json').read_text())
    items = [int(i) for i in out.splitlines()[1].split('\t')[1].split()]
    assert sorted(items) == sorted(set(range(80)) - set(train['0']))


def _split_files_only(folder: Path) -> Path:
    """A dataset folder with tiktok-mini's three split files and no feature file."""
    import shutil
    (folder / 'raw').mkdir(parents=True)
    for name in ('train.json', 'val.json', 'test.json'):
        shutil.copy(Path(__file__).resolve().parents[1] / 'datasets' / 'tiktok-mini' / 'raw' /
                    name, folder / 'raw' / name)
    return folder


def test_missing_raw_files_are_one_error_line_with_the_fix(tmp_path, capsys):
    folder = _split_files_only(tmp_path / 'my-data')
    code, _, err = run_cli(['train', '--model', 'vbpr', '--dataset', folder, '--modalities',
                            'image', '--wandb', 'disabled', '--run-dir', tmp_path / 'run'], capsys)
    assert_user_error(code, err, 'raw files missing', 'image_feat.npy', 'Fix: place them there',
                      'modalities=[...]', f'mmssl-pyg datasets {folder}')
    assert err.count('\n') == 1, err
    (folder / 'raw' / 'test.json').unlink()  # a split file: a subset of modalities won't help
    code, _, err = run_cli(['train', '--model', 'mf', '--dataset', folder, '--wandb',
                            'disabled', '--run-dir', tmp_path / 'run'], capsys)
    assert_user_error(code, err, 'test.json', 'Fix: place them there')
    assert err.count('\n') == 1 and 'modalities=[...]' not in err, err
    assert not (tmp_path / 'run').exists()


def test_datasets_command_lists_missing_files_on_stdout_and_errs_in_one_line(tmp_path, capsys):
    folder = _split_files_only(tmp_path / 'my-data')
    (folder / 'raw' / 'val.json').unlink()
    code, out, err = run_cli(['datasets', folder], capsys)
    assert code == 2 and 'Traceback' not in err
    assert 'Expected files:' in out and 'val.json' in out and 'MISSING' in out
    assert err.count('\n') == 1 and err.startswith('mmssl-pyg datasets: error: ')
    assert 'val.json' in err


def test_an_internal_error_is_one_line_with_the_debug_hint(monkeypatch, capsys):
    def broken(args):
        raise RuntimeError('internal state went wrong')
    monkeypatch.setitem(cli.COMMANDS, 'datasets', broken)
    code, _, err = run_cli(['datasets'], capsys)
    assert_user_error(code, err, 'internal state went wrong', 'MMSSL_PYG_DEBUG=1')
    assert err.count('\n') == 1, err
    monkeypatch.setenv('MMSSL_PYG_DEBUG', '1')
    with pytest.raises(RuntimeError, match='internal state'):
        cli.main(['datasets'])
