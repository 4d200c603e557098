"""Tests of ``mmssl_pyg/training/options.py``.

MMSSL's speed options: the deferred top-k search (exact), the subsampled gradient penalty
(``gp_samples``) and the critic schedule (``critic_every``).

Adversarial options: every option is typed and bounded in one place (a trainer option in
``mmssl_pyg.training.options.OPTION_RULES``, a model option in its constructor's signature,
``mmssl_pyg.utils.options``); a bad value ends in one
``mmssl-pyg <command>: error:`` line naming the option and the value, exit status 2, before
anything is loaded or written.

Model options are declared once, in the constructor's signature (mmssl_pyg/utils/options.py),
and every check is derived from there: the one at construction, the command line's / presets' /
tuner's (``check_option`` through ``resolve_options``) and the benchmark unit keys
(``neutral_values``, ``stored_model_kwargs``)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pytest
import torch

from mmssl_pyg.models import MMSSL, MODELS, LightGCN, Recommender
from mmssl_pyg.testing import assert_user_error, make_tiny_graph, run_cli, write_json_dataset
from mmssl_pyg.training import ConfigError, TrainConfig, resolve_options
from mmssl_pyg.training.options import (
    OPTION_RULES,
    check_cutoffs,
    check_option,
    coerce,
    model_option_rules,
    model_option_types,
    neutral_values,
    stored_model_kwargs,
)
from mmssl_pyg.utils.options import Neutral, Rule, declared_options


@pytest.fixture(scope='module')
def tiny(tmp_path_factory) -> Path:
    """120 users, 80 items (every item used)."""
    return write_json_dataset(tmp_path_factory.mktemp('opts') / 'tiny')


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


def _bad_value(rule: Rule):
    """A value outside ``rule``."""
    if rule.choices:
        return 'not-a-choice'
    if rule.kind is bool:
        return 'maybe'
    if rule.kind is tuple:
        return []
    if rule.low is not None:
        return rule.kind(rule.low if rule.low_open else rule.low - 1)
    return 'abc'


CASES = [(name, option, rule) for name in sorted(MODELS)
         for option, rule in model_option_rules(MODELS[name]).items()]


@pytest.mark.parametrize('bad', [0, -2])
def test_bad_critic_every(bad):
    with pytest.raises(ConfigError, match='critic_every'):
        TrainConfig(critic_every=bad)


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


@pytest.mark.parametrize('flag,value,needle', [
    ('--epochs', '0', "'epochs' expects an integer >= 1, got 0"),
    ('--seed', '-1', "'seed' expects an integer in [0, 4294967295], got -1"),
])
def test_bad_flag_values_use_the_option_table(flag, value, needle, tiny, tmp_path, capsys):
    code, _, err = run_cli(['train', '--dataset', tiny, '--model', 'lightgcn', '--wandb',
                            'disabled', '--run-dir', tmp_path / 'run', flag, value], capsys)
    assert_user_error(code, err, needle, 'command-line option')
    assert not (tmp_path / 'run').exists()


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


def test_the_option_table_holds_no_model_rows():
    assert sorted({key.split('.')[0] for key in OPTION_RULES}) == ['cli', 'train']


def test_every_model_option_is_declared_with_a_type():
    """Only options whose values are not one simple type are left to the model."""
    unchecked = {(name, opt.name) for name, cls in MODELS.items()
                 for opt in declared_options(cls).values() if opt.rule is None}
    assert unchecked == {('freedom', 'modality_weights'), ('freedom', 'cache_dir'),
                         ('lattice', 'cache_dir')}


@pytest.mark.parametrize('name,option,rule', CASES, ids=[f'{n}-{o}' for n, o, _ in CASES])
def test_construction_and_command_line_check_an_option_alike(name, option, rule):
    """The same declaration, the same words: ``<where>: option 'x' expects <rule>, got v``."""
    cls, bad = MODELS[name], _bad_value(rule)
    expected = f"option {option!r} expects {rule.describe()}, got {bad!r}"
    with pytest.raises(ConfigError) as err:
        cls(make_tiny_graph(), **{option: bad})
    assert str(err.value) == f'{cls.__name__}: {expected}'
    with pytest.raises(ConfigError) as err:
        resolve_options(cls, 'tiktok', model_name=name, overrides=[(f'model.{option}', bad)])
    assert str(err.value) == f'override model.{option}={bad}: {expected}'


def test_rules_follow_each_models_declaration_not_the_option_name():
    """``num_layers`` is ``>= 1`` for GRCN (two weighted layers at least) and ``>= 0`` for
    LightGCN: one name, each model's own bounds."""
    assert resolve_options(MODELS['lightgcn'], 'tiktok',
                           overrides=['num_layers=0']).model_kwargs['num_layers'] == 0
    with pytest.raises(ConfigError, match=r"'num_layers' expects an integer >= 1, got 0"):
        resolve_options(MODELS['grcn'], 'tiktok', overrides=['num_layers=0'])


def test_construction_converts_values_to_the_declared_type():
    model = MMSSL(make_tiny_graph(), embedding_dim=8.0, num_heads=2, critic_dropout=[0.3, 0.4],
                  topk_rate=1)
    assert type(model.embedding_dim) is int and model.embedding_dim == 8
    assert model.critic.dropout == (0.3, 0.4) and type(model.topk_rate) is float


def test_neutral_values_and_stored_keys_derive_from_the_declarations():
    assert neutral_values(MODELS.values()) == {'cold_items': 'none', 'cl_pairing': 'overall'}
    kwargs = {'embedding_dim': 64, 'cl_pairing': 'overall', 'cold_items': 'features'}
    assert stored_model_kwargs(MMSSL, kwargs) == {'embedding_dim': 64,
                                                  'cold_items': 'features'}


def test_two_neutral_values_for_one_option_are_refused():
    class A(Recommender):
        def __init__(self, graph, mode: Annotated[str, Neutral('a')] = 'a'):
            super().__init__(graph)

    class B(Recommender):
        def __init__(self, graph, mode: Annotated[str, Neutral('b')] = 'b'):
            super().__init__(graph)

    with pytest.raises(ConfigError, match="option 'mode' has two neutral values: 'a' and 'b'"):
        neutral_values([A, B])


def test_a_model_with_keyword_arguments_takes_any_option():
    class Loose(Recommender):
        def __init__(self, graph, size: int = 3, **kwargs):
            super().__init__(graph)
            self.size, self.extra = size, kwargs

    assert model_option_types(Loose) is None
    model = Loose(make_tiny_graph(), size='4', colour='red')
    assert (model.size, model.extra) == (4, {'colour': 'red'})
    with pytest.raises(ConfigError, match="^Loose: option 'size' expects an integer, got 'x'$"):
        Loose(make_tiny_graph(), size='x')


def test_a_renamed_option_is_read_under_its_former_name():
    """``feat_norm`` became ``feature_norm`` (one name for all models): checkpoints and saved
    run options with the former name still build the same model, unit keys keep it."""
    from mmssl_pyg.models import VBPR
    graph = make_tiny_graph()
    old = VBPR(graph, feat_norm='none')  # as a checkpoint's model_kwargs would
    assert torch.equal(old.feat_0, graph.features['m0'])
    with pytest.raises(ConfigError, match="'feat_norm' is the former name of 'feature_norm'"):
        VBPR(graph, feat_norm='none', feature_norm='l2')
    with pytest.raises(ConfigError, match="^VBPR: option 'feature_norm' expects one of"):
        VBPR(graph, feat_norm='minmax')
    saved = resolve_options(VBPR, 'tiktok', base=({'feat_norm': 'none'}, {}))
    assert saved.model_kwargs == {'feature_norm': 'none'}
    with pytest.raises(ConfigError, match="unknown model option 'feat_norm'"):  # new input
        resolve_options(VBPR, 'tiktok', overrides=['model.feat_norm=none'])
    assert stored_model_kwargs(VBPR, {'feature_norm': 'l2'}) == {'feat_norm': 'l2'}
    assert stored_model_kwargs(MMSSL, {'feature_norm': 'l2'}) == {'feature_norm': 'l2'}


#: TrainConfig's documented defaults (its docstring), as to_dict writes them
DEFAULTS = {'lr': 1e-3, 'weight_decay': 0.0, 'critic_lr': 3e-4, 'critic_betas': [0.5, 0.9],
            'critic_weight_decay': 0.0, 'critic_every': 1, 'batch_size': 1024,
            'batches_per_epoch': None, 'epochs': 1000, 'patience': 10, 'eval_every': 1,
            'ks': [10, 20, 50], 'metric': 'recall@20', 'eval_batch_size': 1024,
            'exclude_val_at_test': False, 'seed': 2023, 'device': 'auto', 'num_threads': None,
            'progress': True, 'precision': 'fp32'}


def test_train_config_to_dict_and_from_dict_round_trip():
    assert TrainConfig().to_dict() == DEFAULTS
    cfg = TrainConfig(ks=(5, 10), metric='ndcg@5', critic_betas=(0.4, 0.8), seed='7')
    d = cfg.to_dict()
    assert d == {**DEFAULTS, 'ks': [5, 10], 'metric': 'ndcg@5', 'critic_betas': [0.4, 0.8],
                 'seed': 7}
    assert TrainConfig.from_dict(d) == cfg and cfg.ks == (5, 10)
    assert TrainConfig.from_dict({'lr': '0.5'}).lr == 0.5  # checked and converted
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_dict({'lr': 'x'}, 'my.yaml')
    assert str(err.value) == "my.yaml: option 'lr' expects a number > 0, got 'x'"
    valid = ', '.join(sorted(DEFAULTS))
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_dict({'lr': 0.1, 'bogus': 1})
    assert str(err.value) == (f"train options: unknown train option 'bogus'; valid train "
                              f"options: {valid}")
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_dict({'bogus': 1, 'other': 2}, 'run.yaml')
    assert str(err.value) == (f"run.yaml: unknown train options 'bogus', 'other'; valid train "
                              f"options: {valid}")


def test_train_config_metric_and_device_messages_in_full():
    for metric in ('hit@10', 'ndcg@50', 'precision@20'):
        assert TrainConfig(metric=metric).metric == metric
    for metric in ('recall@30', 'mrr@20', 'recall20', 'Recall@20', 'recall@20x'):
        with pytest.raises(ConfigError) as err:
            TrainConfig(metric=metric)
        assert str(err.value) == (
            f"TrainConfig.metric must be <name>@<k> with name in ['recall', 'precision', "
            f"'ndcg', 'hit'] and k in ks=[10, 20, 50], got {metric!r}")
    for device in ('auto', 'cpu', 'mps', 'cuda', 'cuda:1', 'cuda:12'):  # no CUDA call
        assert TrainConfig(device=device).device == device
    for device in ('gpu', 'cuda:x', 'cpu:0', 'cuda:', ' cpu'):
        with pytest.raises(ConfigError) as err:
            TrainConfig(device=device)
        assert str(err.value) == (f"TrainConfig.device must be 'auto', 'cpu', 'cuda' or "
                                  f"'cuda:N', got {device!r}")


def test_check_cutoffs_and_coerce():
    assert check_cutoffs([5, 10], 10) == (5, 10)  # up to the number of items
    with pytest.raises(ConfigError) as err:
        check_cutoffs([5, 20, 30], 10, '--ks')
    assert str(err.value) == ('--ks [20, 30] exceed the number of items (10): top-k lists '
                              'cannot be that long. Fix: use cut-offs <= 10')
    with pytest.raises(ConfigError) as err:
        check_cutoffs((11,), 10)
    assert str(err.value).startswith('ks [11] exceed')
    # coerce: check_option in an earlier argument order, a trainer option by default
    assert coerce('3', 1, 'epochs', 'src') == 3
    with pytest.raises(ConfigError) as err:
        coerce('0', 1, 'epochs', 'src')
    assert str(err.value) == "src: option 'epochs' expects an integer >= 1, got 0"
    assert coerce('0', 1, 'epochs', 'src', section='model') == 0  # no rule: the default's type


def test_options_without_a_rule_are_checked_against_their_defaults_type():
    size = check_option('model', 'size', '4', 3)
    assert size == 4 and type(size) is int  # not 4.0
    assert check_option('model', 'rate', '1e-3', 2.5) == 0.001
    assert check_option('model', 'flag', 'true', True) is True  # a bool, not an int
    assert check_option('model', 'name', 5, 'abc') == 5  # strings: the model checks them
    assert check_option('model', 'path', [1], None) == [1]
    with pytest.raises(ConfigError) as err:
        check_option('model', 'flag', 'maybe', True)
    assert str(err.value) == "options: option 'flag' expects true or false, got 'maybe'"


def test_an_option_without_a_rule_and_a_float_default_refuses_what_is_not_a_number():
    # the float rule's description ('a number') names what is expected
    with pytest.raises(ConfigError) as err:
        check_option('model', 'rate', 'fast', 2.5, 'config file c.yaml')
    assert str(err.value) == "config file c.yaml: option 'rate' expects a number, got 'fast'"
    rate = check_option('model', 'rate', 1, 2.5)
    assert rate == 1.0 and type(rate) is float


def test_signature_defaults_skip_the_graph_and_star_args():
    class Sig(Recommender):
        def __init__(self, graph, *parts, size: int = 3, name=None, needed):
            super().__init__(graph)

    types = model_option_types(Sig)
    assert types == {'size': 3, 'name': None, 'needed': None}
    types['size'] = 9  # each call returns a new dict
    assert model_option_types(Sig) == {'size': 3, 'name': None, 'needed': None}
    assert stored_model_kwargs(Sig, {'size': 4, 'other': 1}) == {'size': 4, 'other': 1}
