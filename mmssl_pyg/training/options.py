"""Trainer options (:class:`TrainConfig`) and the rules every option value is checked against.

One place defines each option's type and bounds (:data:`OPTION_RULES`, through
:func:`check_option`), the default cut-offs and metric names, and which trainer options
never change a result or may change on resume. The preset loader is
:mod:`mmssl_pyg.training.presets`.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import re
from dataclasses import dataclass
from typing import Any

from ..nn.encoder import COLD_ITEM_MODES, CONTENT_SCALES
from ..nn.losses import CL_PAIRINGS
from ..utils.yamlio import load_yaml

#: Cut-offs of the reported metrics (``TrainConfig.ks``, ``mmssl-pyg evaluate --ks``).
DEFAULT_KS = (10, 20, 50)
#: Ranking metrics, in report order; each is reported as ``<name>@<k>``.
METRIC_NAMES = ('recall', 'precision', 'ndcg', 'hit')
PRECISIONS = ('fp32', 'bf16', 'fp16')
#: Trainer options that never change a result (where and how fast it is computed, what is
#: shown): benchmarks leave them out of a unit's key.
NON_RESULT_TRAIN_KEYS = ('progress', 'device', 'num_threads', 'eval_batch_size')
#: Trainer options that may differ when a run is resumed: those that never change a result,
#: and the stopping rule (a resumed run may be given more epochs or patience).
RESUMABLE = ('epochs', 'patience') + NON_RESULT_TRAIN_KEYS


class ConfigError(ValueError):
    """A bad option name or value in a preset, a config file or a ``key=value`` override."""


@dataclass
class TrainConfig:
    """Options of :class:`~mmssl_pyg.training.Trainer`.

    Args:
        lr: learning rate of the model optimiser (AdamW).
        weight_decay: AdamW weight decay (default ``0``: the models put their L2 terms in the
            loss, as the paper does; PyTorch's own AdamW default would be ``0.01``).
        critic_lr, critic_betas, critic_weight_decay: Adam options of the critic optimiser,
            used only when the model ``has_critic`` (defaults: the WGAN-GP settings of the
            paper, ``3e-4`` and ``(0.5, 0.9)``).
        critic_every: run the critic step (``critic_loss`` and its optimiser step) on every
            ``critic_every``-th mini-batch only, counted over the whole run (default ``1``:
            every mini-batch, as in the paper); the model step runs on every mini-batch, with
            the critic as last updated. A critic schedule, like WGAN's ``n_critic`` turned
            around: see the README's speed section for what it changes.
        batch_size: distinct users per mini-batch (one positive, one negative each).
        batches_per_epoch: mini-batches per epoch; ``None`` gives ``ceil(|train| / batch_size)``.
        epochs: maximum number of epochs.
        patience: stop after this many consecutive evaluations without a better validation
            ``metric`` (``0`` disables early stopping).
        eval_every: evaluate on validation every this many epochs (and always after the last).
        ks: cut-offs of the reported metrics.
        metric: validation metric that selects the epoch (``recall@20``).
        eval_batch_size: users per block of the full-ranking evaluation.
        exclude_val_at_test: also exclude each user's validation items when ranking for test.
        seed: seeds torch, numpy, Python's ``random`` and the sampler's generator.
        device: ``'auto'`` (CUDA when available), ``'cpu'``, ``'cuda'``, ``'cuda:1'``, ...
        num_threads: torch intra-op threads on CPU (``None`` leaves torch's default).
        progress: show tqdm progress bars.
        precision: ``'fp32'`` (default), ``'bf16'`` or ``'fp16'``: mixed precision of the
            training steps (``torch.autocast`` around ``critic_loss`` / ``loss``; evaluation
            stays float32). ``'bf16'`` works on GPUs and CPUs; ``'fp16'`` needs a CUDA GPU and
            adds a ``GradScaler`` per optimiser. Parameters, optimiser states, sparse
            propagation and MMSSL's gradient penalty stay float32.
    """
    lr: float = 1e-3
    weight_decay: float = 0.0
    critic_lr: float = 3e-4
    critic_betas: tuple[float, float] = (0.5, 0.9)
    critic_weight_decay: float = 0.0
    critic_every: int = 1
    batch_size: int = 1024
    batches_per_epoch: int | None = None
    epochs: int = 1000
    patience: int = 10
    eval_every: int = 1
    ks: tuple[int, ...] = DEFAULT_KS
    metric: str = 'recall@20'
    eval_batch_size: int = 1024
    exclude_val_at_test: bool = False
    seed: int = 2023
    device: str = 'auto'
    num_threads: int | None = None
    progress: bool = True
    precision: str = 'fp32'

    def __post_init__(self):
        for f in dataclasses.fields(self):  # every field through OPTION_RULES (one place)
            setattr(self, f.name, check_option('train', f.name, getattr(self, f.name),
                                               f.default, 'TrainConfig'))
        m = re.fullmatch(r'([a-z]+)@(\d+)', self.metric)
        if m is None or m.group(1) not in METRIC_NAMES or int(m.group(2)) not in self.ks:
            raise ConfigError(
                f'TrainConfig.metric must be <name>@<k> with name in {list(METRIC_NAMES)} and '
                f'k in ks={list(self.ks)}, got {self.metric!r}')
        if not re.fullmatch(r'auto|cpu|mps|cuda(:\d+)?', str(self.device)):
            raise ConfigError(f"TrainConfig.device must be 'auto', 'cpu', 'cuda' or 'cuda:N', "
                             f'got {self.device!r}')

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out['critic_betas'] = list(self.critic_betas)
        out['ks'] = list(self.ks)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = 'train options') -> TrainConfig:
        check_keys(values, train_option_types(), source, 'train')
        return cls(**{k: check_option('train', k, v, train_option_types()[k], source)
                      for k, v in values.items()})


# ---------------------------------------------------------------------------------------------
# key checking and type coercion


def train_option_types() -> dict[str, Any]:
    """``{field: default value}`` of :class:`TrainConfig` (the default gives the type)."""
    return {f.name: f.default for f in dataclasses.fields(TrainConfig)}


def model_option_types(model_cls) -> dict[str, Any] | None:
    """``{keyword: default}`` of ``model_cls.__init__`` after ``graph``; ``None`` when the
    constructor takes ``**kwargs`` (any key is then accepted). The signature is read once per
    class; each call returns a new dict."""
    pairs = _signature_defaults(model_cls)
    return None if pairs is None else dict(pairs)


@functools.cache
def _signature_defaults(model_cls) -> tuple[tuple[str, Any], ...] | None:
    params = list(inspect.signature(model_cls.__init__).parameters.values())[1:]  # drop self
    out = []
    for p in params:
        if p.kind == p.VAR_KEYWORD:
            return None
        if p.kind == p.VAR_POSITIONAL or p.name == 'graph':
            continue
        out.append((p.name, None if p.default is p.empty else p.default))
    return tuple(out)


def check_keys(values: dict, valid: dict | None, source: str, section: str) -> None:
    if valid is None:
        return
    unknown = [k for k in values if k not in valid]
    if unknown:
        raise ConfigError(
            f'{source}: unknown {section} option{"s" if len(unknown) > 1 else ""} '
            f'{", ".join(map(repr, unknown))}; valid {section} options: {", ".join(sorted(valid))}')


@dataclass(frozen=True)
class Rule:
    """Type and bounds of one option (see :data:`OPTION_RULES`).

    Args:
        kind: ``int``, ``float``, ``bool``, ``str`` or ``tuple``.
        low, high: bounds (``None``: unbounded); ``low_open`` / ``high_open`` exclude them.
        optional: ``None`` is a valid value.
        item: the rule of each element (``tuple`` options).
        length: the required number of elements (``tuple`` options).
        choices: the valid values (``str`` options).
    """
    kind: type
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    optional: bool = False
    item: Rule | None = None
    length: int | None = None
    choices: tuple[str, ...] | None = None

    def describe(self, plural: bool = False) -> str:
        if self.kind is tuple:
            n = f'{self.length} ' if self.length else ''
            text = f'a list of {n}{self.item.describe(True) if self.item else "values"}'
        elif self.choices:
            text = f'one of {", ".join(self.choices)}'
        else:
            names = {int: ('an integer', 'integers'), float: ('a number', 'numbers'),
                     bool: ('true or false', 'booleans'), str: ('a string', 'strings')}
            text = names[self.kind][plural]
            if self.low is not None and self.high is not None:
                text += (f' in {"(" if self.low_open else "["}{_num(self.low)}, '
                         f'{_num(self.high)}{")" if self.high_open else "]"}')
            elif self.low is not None:
                text += f' {">" if self.low_open else ">="} {_num(self.low)}'
        return text + (' (or null)' if self.optional else '')


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(x)


_POS_INT = Rule(int, 1)
_NONNEG_INT = Rule(int, 0)
_POS = Rule(float, 0, low_open=True)
_NONNEG = Rule(float, 0)
_UNIT = Rule(float, 0, 1)
_RATIO = Rule(float, 0, 1, high_open=True)
_SEED_MAX = 2 ** 32 - 1  # numpy's seed range

#: Type and bounds of every option, keyed by ``'train.<name>'`` or ``'model.<name>'``. A model
#: option shares the rule of its name whatever the model; an option not listed here is checked
#: against the type of its default value.
OPTION_RULES: dict[str, Rule] = {
    'train.lr': _POS, 'train.weight_decay': _NONNEG, 'train.critic_lr': _POS,
    'train.critic_betas': Rule(tuple, item=_RATIO, length=2),
    'train.critic_weight_decay': _NONNEG, 'train.critic_every': _POS_INT,
    'train.batch_size': _POS_INT,
    'train.batches_per_epoch': Rule(int, 1, optional=True), 'train.epochs': _POS_INT,
    'train.patience': _NONNEG_INT, 'train.eval_every': _POS_INT,
    'train.ks': Rule(tuple, item=_POS_INT), 'train.metric': Rule(str),
    'train.eval_batch_size': _POS_INT, 'train.exclude_val_at_test': Rule(bool),
    'train.seed': Rule(int, 0, _SEED_MAX), 'train.device': Rule(str),
    'train.num_threads': Rule(int, 1, optional=True), 'train.progress': Rule(bool),
    'train.precision': Rule(str, choices=PRECISIONS),
    'model.embedding_dim': _POS_INT, 'model.num_layers': _NONNEG_INT,
    'model.num_item_layers': _NONNEG_INT, 'model.num_heads': _POS_INT,
    'model.latent_dim': Rule(int, 1, optional=True), 'model.feat_embed_dim': _POS_INT,
    'model.visual_dim': _POS_INT, 'model.knn_k': _POS_INT, 'model.num_routing': _POS_INT,
    'model.dropout': _RATIO, 'model.feature_dropout': _RATIO, 'model.ssl_ratio': _RATIO,
    'model.critic_dropout': Rule(tuple, item=_RATIO, length=2),
    'model.reg_weight': _NONNEG, 'model.modality_reg_weight': _NONNEG,
    'model.cl_weight': _NONNEG, 'model.adv_weight': _NONNEG, 'model.aux_weight': _NONNEG,
    'model.gp_weight': _NONNEG, 'model.ssl_weight': _NONNEG, 'model.gumbel_scale': _NONNEG,
    'model.critic_negative_slope': _NONNEG, 'model.cl_temperature': _POS,
    'model.ssl_temp': _POS, 'model.gumbel_temperature': _POS,
    'model.critic_output_scale': _POS, 'model.topk_rate': Rule(float, 0, 1, low_open=True),
    'model.modality_mix': _UNIT, 'model.fusion_weight': _UNIT, 'model.lambda_coeff': _UNIT,
    'model.max_critic_memory': Rule(int, 1, optional=True),
    'model.critic_batch_size': _POS_INT, 'model.critic_columns': Rule(int, 1, optional=True),
    'model.gp_samples': Rule(int, 2, optional=True),
    'model.adv_samples': Rule(int, 2, optional=True),
    'model.item_block_size': _POS_INT, 'model.use_bias': Rule(bool),
    'model.cl_intra_view_negatives': Rule(bool),
    'model.mix_scale': Rule(str, choices=CONTENT_SCALES),
    'model.fusion_scale': Rule(str, choices=CONTENT_SCALES),
    'model.cold_items': Rule(str, choices=COLD_ITEM_MODES),
    'model.cl_pairing': Rule(str, choices=CL_PAIRINGS),
    'cli.k': _POS_INT, 'cli.users': Rule(tuple, item=Rule(int, 0)),
}


def _rule_for(section: str, key: str, reference: Any) -> Rule | None:
    rule = OPTION_RULES.get(f'{section}.{key}')
    if rule is not None:
        return rule
    if isinstance(reference, bool):
        return Rule(bool)
    if isinstance(reference, int):
        return Rule(int)
    if isinstance(reference, float):
        return Rule(float)
    return None  # strings, None defaults, lists, paths: the model checks them


def _convert(value: Any, rule: Rule, source: str, key: str, element: bool = False,
             label: str | None = None) -> Any:
    """``value`` as ``rule.kind`` within its bounds; :class:`ConfigError` naming the source
    and the option (``label`` replaces ``option '<key>'``)."""
    def bad(extra: str = '') -> ConfigError:
        what = f'option {key!r}' if label is None else label
        if element:
            what = f'each value of {what}' if what else 'each value'
        got = 'nothing' if value is None else repr(value)
        prefix = f'{source}: ' if source else ''
        return ConfigError(f'{prefix}{what} expects {rule.describe()}, got {got}{extra}'
                           .strip())

    if value is None:
        if rule.optional:
            return None
        raise bad()
    kind = rule.kind
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ('true', 'false', 'yes', 'no', '1', '0'):
            return value.lower() in ('true', 'yes', '1')
        raise bad()
    if kind is tuple:
        items = value
        if isinstance(value, str):  # "10,20,50"
            items = [load_yaml(v) for v in value.split(',') if v.strip()]
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            items = [value]
        if not isinstance(items, (list, tuple)) or not items:
            raise bad()
        if rule.length is not None and len(items) != rule.length:
            raise bad(f' ({len(items)} values)')
        out = tuple(_convert(v, rule.item, source, key, True, label) if rule.item else v
                    for v in items)
        if len(set(out)) != len(out) and rule.length is None:
            prefix = f'{source}: ' if source else ''
            what = f'option {key!r}' if label is None else label
            raise ConfigError(f'{prefix}{what} lists a value more than once: {list(out)}'
                              .strip())
        return out
    if kind is str:
        if not isinstance(value, str):
            raise bad()
        if rule.choices is not None and value not in rule.choices:
            raise bad()
        return value
    # numbers
    if isinstance(value, bool):
        raise bad()
    if isinstance(value, str):
        try:
            value = float(value.strip()) if kind is float or not value.strip().lstrip(
                '+-').isdigit() else int(value.strip())
        except ValueError:
            raise bad() from None
    if not isinstance(value, (int, float)):
        raise bad()
    if kind is int:
        if isinstance(value, float):
            if not (math.isfinite(value) and value.is_integer()):
                raise bad()
            value = int(value)
    else:
        value = float(value)
        if not math.isfinite(value):
            raise bad()
    if rule.low is not None and (value < rule.low or (rule.low_open and value == rule.low)):
        raise bad()
    if rule.high is not None and (value > rule.high or (rule.high_open and value == rule.high)):
        raise bad()
    return value


def check_option(section: str, key: str, value: Any, reference: Any = None,
                 source: str = 'options', label: str | None = None) -> Any:
    """Type-check and bound-check one option value (the one place where every option of the
    trainer and of the models is validated).

    Args:
        section: ``'model'`` or ``'train'``.
        key: the option name.
        value: the value as given (YAML-typed, or a string from the command line).
        reference: the option's default (its type is used for options without a rule).
        source: where the value came from (named in the error).
        label: how the error names the option (default ``option '<key>'``).

    Returns:
        The value converted to the option's type (``'1e-3'`` -> ``0.001``, ``2.0`` -> ``2``
        for integers, lists -> tuples).

    Raises:
        ConfigError: naming the source, the option, the expected type and bounds, and the
            value.
    """
    rule = _rule_for(section, key, reference)
    if rule is None:
        return value
    return _convert(value, rule, source, key, label=label)


def coerce(value: Any, reference: Any, key: str, source: str, section: str = 'train') -> Any:
    """:func:`check_option` with the argument order of earlier versions."""
    return check_option(section, key, value, reference, source)


def check_cutoffs(ks, num_items: int, what: str = 'ks') -> tuple[int, ...]:
    """Raise :class:`ConfigError` when a cut-off exceeds the number of items."""
    ks = tuple(ks)
    too_big = [k for k in ks if k > num_items]
    if too_big:
        raise ConfigError(f'{what} {too_big} exceed the number of items ({num_items}): '
                          f'top-k lists cannot be that long. Fix: use cut-offs <= {num_items}')
    return ks


# ---------------------------------------------------------------------------------------------
# presets
