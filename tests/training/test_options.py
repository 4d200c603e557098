"""Model options are declared once, in the constructor's signature (mmssl_pyg/utils/options.py),
and every check is derived from there: the one at construction, the command line's / presets' /
tuner's (``check_option`` through ``resolve_options``) and the benchmark unit keys
(``neutral_values``, ``stored_model_kwargs``)."""
from __future__ import annotations

from typing import Annotated

import pytest
import torch
from conftest import make_tiny_graph

from mmssl_pyg.models import MMSSL, MODELS, Recommender
from mmssl_pyg.training.options import (
    OPTION_RULES,
    model_option_rules,
    model_option_types,
    neutral_values,
    stored_model_kwargs,
)
from mmssl_pyg.training.presets import resolve_options
from mmssl_pyg.utils.options import ConfigError, Neutral, Rule, declared_options


def test_the_option_table_holds_no_model_rows():
    assert sorted({key.split('.')[0] for key in OPTION_RULES}) == ['cli', 'train']


def test_every_model_option_is_declared_with_a_type():
    """Only options whose values are not one simple type are left to the model."""
    unchecked = {(name, opt.name) for name, cls in MODELS.items()
                 for opt in declared_options(cls).values() if opt.rule is None}
    assert unchecked == {('freedom', 'modality_weights'), ('freedom', 'cache_dir'),
                         ('lattice', 'cache_dir')}


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
