"""Adversarial options: every option is typed and bounded in one place (a trainer option in
``mmssl_pyg.training.options.OPTION_RULES``, a model option in its constructor's signature,
``mmssl_pyg.utils.options``); a bad value ends in one
``mmssl-pyg <command>: error:`` line naming the option and the value, exit status 2, before
anything is loaded or written."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from _adversarial import FAST, assert_user_error, run_cli
from test_training_utils import write_json_dataset

from mmssl_pyg.models import MMSSL, LightGCN
from mmssl_pyg.training import ConfigError, TrainConfig, resolve_options
from mmssl_pyg.training.options import check_option


@pytest.fixture(scope='module')
def tiny(tmp_path_factory) -> Path:
    """120 users, 80 items (every item used)."""
    return write_json_dataset(tmp_path_factory.mktemp('opts') / 'tiny')


@pytest.fixture(scope='module')
def trained(tiny, tmp_path_factory):
    run = tmp_path_factory.mktemp('opts-run') / 'run'
    from mmssl_pyg import cli
    assert cli.main(['train', '--dataset', str(tiny), '--run-dir', str(run), *FAST]) == 0
    return run


BAD_OVERRIDES = [
    # (model, override, what the message must name)
    ('lightgcn', 'embedding_dim=0', "'embedding_dim' expects an integer >= 1, got 0"),
    ('lightgcn', 'embedding_dim=-4', "'embedding_dim' expects an integer >= 1, got -4"),
    ('lightgcn', 'embedding_dim=2.5', "'embedding_dim' expects an integer >= 1, got 2.5"),
    ('lightgcn', 'embedding_dim=abc', "'embedding_dim' expects an integer >= 1, got 'abc'"),
    ('lightgcn', 'embedding_dim=true', "'embedding_dim' expects an integer >= 1, got True"),
    ('lightgcn', 'model.embedding_dim=0', "'embedding_dim' expects an integer >= 1"),
    ('mmssl', 'embedding_dim=0', "'embedding_dim' expects an integer >= 1, got 0"),
    ('mf', 'embedding_dim=0', "'embedding_dim' expects an integer >= 1, got 0"),
    ('lightgcn', 'num_layers=-1', "'num_layers' expects an integer >= 0, got -1"),
    ('lightgcn', 'reg_weight=-1', "'reg_weight' expects a number >= 0, got -1"),
    ('lightgcn', 'reg_weight=nan', "'reg_weight' expects a number >= 0, got nan"),
    ('mmssl', 'feature_dropout=1.0', "'feature_dropout' expects a number in [0, 1), got 1.0"),
    ('mmssl', 'topk_rate=0', "'topk_rate' expects a number in (0, 1], got 0"),
    ('mmssl', 'cl_temperature=0', "'cl_temperature' expects a number > 0, got 0"),
    ('mmssl', 'critic_dropout=[0.5]', "'critic_dropout' expects a list of 2 numbers"),
    ('mmssl', 'num_heads=0', "'num_heads' expects an integer >= 1, got 0"),
    ('lightgcn', 'patience=1.5', "'patience' expects an integer >= 0, got 1.5"),
    ('lightgcn', 'patience=-1', "'patience' expects an integer >= 0, got -1"),
    ('lightgcn', 'seed=1.5', "'seed' expects an integer in [0, 4294967295], got 1.5"),
    ('lightgcn', 'seed=-3', "'seed' expects an integer in [0, 4294967295], got -3"),
    ('lightgcn', 'seed=abc', "'seed' expects an integer"),
    ('lightgcn', 'batches_per_epoch=abc',
     "'batches_per_epoch' expects an integer >= 1 (or null), got 'abc'"),
    ('lightgcn', 'batches_per_epoch=0', "'batches_per_epoch' expects an integer >= 1"),
    ('lightgcn', 'batch_size=0', "'batch_size' expects an integer >= 1, got 0"),
    ('lightgcn', 'epochs=0', "'epochs' expects an integer >= 1, got 0"),
    ('lightgcn', 'eval_every=0', "'eval_every' expects an integer >= 1, got 0"),
    ('lightgcn', 'eval_batch_size=-1', "'eval_batch_size' expects an integer >= 1"),
    ('lightgcn', 'num_threads=0', "'num_threads' expects an integer >= 1 (or null), got 0"),
    ('lightgcn', 'lr=0', "'lr' expects a number > 0, got 0"),
    ('lightgcn', 'lr=-1e-3', "'lr' expects a number > 0"),
    ('lightgcn', 'lr=nan', "'lr' expects a number > 0, got nan"),
    ('lightgcn', 'lr=inf', "'lr' expects a number > 0, got inf"),
    ('lightgcn', 'weight_decay=-0.1', "'weight_decay' expects a number >= 0, got -0.1"),
    ('lightgcn', 'critic_betas=[1.2,0.9]', "'critic_betas' expects a number in [0, 1), got 1.2"),
    ('lightgcn', 'ks=abc', "each value of option 'ks' expects an integer >= 1, got 'abc'"),
    ('lightgcn', 'ks=', "'ks' expects a list of integers >= 1, got nothing"),
    ('lightgcn', 'ks=[]', "'ks' expects a list of integers >= 1, got []"),
    ('lightgcn', 'ks=0', "each value of option 'ks' expects an integer >= 1, got 0"),
    ('lightgcn', 'ks=[10,10,20]', "'ks' lists a value more than once: [10, 10, 20]"),
    ('lightgcn', 'metric=recall@30', 'metric must be <name>@<k>'),
    ('lightgcn', 'precision=fp8', "'precision' expects one of fp32, bf16, fp16, got 'fp8'"),
    ('lightgcn', 'exclude_val_at_test=maybe', "'exclude_val_at_test' expects true or false"),
    ('lightgcn', 'progress=2', "'progress' expects true or false, got 2"),
]


@pytest.mark.parametrize('model,override,needle', BAD_OVERRIDES,
                         ids=[f'{m}-{o}' for m, o, _ in BAD_OVERRIDES])
def test_bad_option_value_is_a_user_error_before_any_work(model, override, needle, tiny,
                                                          tmp_path, capsys, monkeypatch):
    import mmssl_pyg.training.run as run_module

    def no_loading(*args, **kwargs):
        raise AssertionError('the data was loaded before the options were checked')

    monkeypatch.setattr(run_module, 'load_data', no_loading)
    run = tmp_path / 'run'
    code, _, err = run_cli(['train', '--model', model, '--dataset', tiny, '--run-dir', run,
                            '--wandb', 'disabled', override], capsys)
    assert_user_error(code, err, needle)
    assert not run.exists()


def test_ks_beyond_the_item_count_is_an_error(tiny, tmp_path, capsys):
    run = tmp_path / 'run'
    code, _, err = run_cli(['train', '--dataset', tiny, '--run-dir', run, *FAST,
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


@pytest.mark.parametrize('flag,value,needle', [
    ('--epochs', '0', "'epochs' expects an integer >= 1, got 0"),
    ('--seed', '-1', "'seed' expects an integer in [0, 4294967295], got -1"),
])
def test_bad_flag_values_use_the_option_table(flag, value, needle, tiny, tmp_path, capsys):
    code, _, err = run_cli(['train', '--dataset', tiny, '--model', 'lightgcn', '--wandb',
                            'disabled', '--run-dir', tmp_path / 'run', flag, value], capsys)
    assert_user_error(code, err, needle, 'command-line option')
    assert not (tmp_path / 'run').exists()


# --------------------------------------------------------------------------------------------
# correct neighbours: accepted and converted


@pytest.mark.parametrize('override,field,value', [
    ('epochs=2.0', 'epochs', 2),
    ('lr=1e-2', 'lr', 0.01),
    ('ks=5,20', 'ks', (5, 20)),
    ('ks=[5, 20]', 'ks', (5, 20)),
    ('batches_per_epoch=null', 'batches_per_epoch', None),
    ('batches_per_epoch=3', 'batches_per_epoch', 3),
    ('patience=0', 'patience', 0),
    ('seed=0', 'seed', 0),
    ('exclude_val_at_test=yes', 'exclude_val_at_test', True),
    ('critic_betas=[0, 0.999]', 'critic_betas', (0.0, 0.999)),
])
def test_valid_values_are_converted(override, field, value):
    train = resolve_options(LightGCN, 'tiktok', overrides=[override]).train
    got = getattr(train, field)
    assert got == value and type(got) is type(value)


def test_every_rule_accepts_the_shipped_defaults():
    import dataclasses

    from mmssl_pyg.models import MODELS
    for f in dataclasses.fields(TrainConfig):
        assert check_option('train', f.name, f.default, f.default) == f.default
    from mmssl_pyg.utils.options import declared_options
    for cls in MODELS.values():
        for name, opt in declared_options(cls).items():
            if opt.rule is not None:
                got = check_option('model', name, opt.default, opt.default, model_cls=cls)
                assert got == opt.default


def test_python_api_is_checked_by_the_same_table():
    with pytest.raises(ConfigError, match="TrainConfig: option 'patience' expects an integer"):
        TrainConfig(patience=1.5)
    with pytest.raises(ConfigError, match="option 'embedding_dim' expects an integer >= 1"):
        resolve_options(MMSSL, 'tiktok', overrides=['embedding_dim=0'])


# --------------------------------------------------------------------------------------------
# overrides after options, stray arguments


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


# --------------------------------------------------------------------------------------------
# evaluate --ks, recommend --users / -k


@pytest.mark.parametrize('ks,needle', [
    ('', "argument --ks: expects a list of integers >= 1, got ''"),
    ('abc', "argument --ks: each value expects an integer >= 1, got 'abc'"),
    ('0', 'got 0'),
    ('10,10', 'lists a value more than once: [10, 10]'),
    ('5,200', '--ks [200] exceed the number of items (80)'),
])
def test_evaluate_bad_ks(ks, needle, trained, capsys):
    code, _, err = run_cli(['evaluate', trained, '--ks', ks, '--device', 'cpu'], capsys)
    assert_user_error(code, err, needle)


def test_evaluate_ks_at_the_item_count_is_accepted(trained, capsys):
    code, out, err = run_cli(['evaluate', trained, '--ks', '80', '--json', '--device', 'cpu'],
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
def test_recommend_bad_users_and_k(args, needle, trained, capsys):
    code, _, err = run_cli(['recommend', trained, *args, '--device', 'cpu'], capsys)
    assert_user_error(code, err, needle)


def test_recommend_k_equal_to_the_item_count_lists_every_unseen_item(trained, tiny, capsys):
    code, out, err = run_cli(['recommend', trained, '--users', '0', '-k', '80'], capsys)
    assert code == 0, err
    train = json.loads((tiny / 'raw' / 'train.json').read_text())
    items = [int(i) for i in out.splitlines()[1].split('\t')[1].split()]
    assert sorted(items) == sorted(set(range(80)) - set(train['0']))
