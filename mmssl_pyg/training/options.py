"""Trainer options (:class:`TrainConfig`) and the checks of every option value.

A trainer option's type and bounds are in :data:`OPTION_RULES`; a model option's are declared
in its model's signature (:mod:`mmssl_pyg.utils.options`). :func:`check_option` checks both
with one conversion. Also here: the default cut-offs and metric names, which trainer options
never change a result or may change on resume, and what benchmark unit keys derive from the
model declarations (:func:`neutral_values`, :func:`stored_model_kwargs`). The preset loader is
:mod:`mmssl_pyg.training.presets`.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import re
from dataclasses import dataclass
from typing import Any

from ..utils.options import ConfigError, Rule, convert, declared_options

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


_POS_INT = Rule(int, 1)
_NONNEG_INT = Rule(int, 0)
_POS = Rule(float, 0, low_open=True)
_NONNEG = Rule(float, 0)
_RATIO = Rule(float, 0, 1, high_open=True)
_SEED_MAX = 2 ** 32 - 1  # numpy's seed range

#: Type and bounds of every trainer option (``'train.<name>'``) and command-line value
#: (``'cli.<name>'``). Model options are declared in their model's signature
#: (:mod:`mmssl_pyg.utils.options`, :func:`model_option_rules`); an option without a rule is
#: checked against the type of its default value.
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
    'cli.k': _POS_INT, 'cli.users': Rule(tuple, item=Rule(int, 0)),
}


def model_option_rules(model_cls) -> dict[str, Rule]:
    """``{keyword: Rule}`` of the options ``model_cls`` declares with a checkable type."""
    return {name: opt.rule for name, opt in declared_options(model_cls).items()
            if opt.rule is not None}


def _rule_for(section: str, key: str, reference: Any, model_cls=None) -> Rule | None:
    rule = OPTION_RULES.get(f'{section}.{key}')
    if rule is None and section == 'model' and model_cls is not None:
        rule = model_option_rules(model_cls).get(key)
    if rule is not None:
        return rule
    if isinstance(reference, bool):
        return Rule(bool)
    if isinstance(reference, int):
        return Rule(int)
    if isinstance(reference, float):
        return Rule(float)
    return None  # strings, None defaults, lists, paths: the model checks them


def check_option(section: str, key: str, value: Any, reference: Any = None,
                 source: str = 'options', label: str | None = None, model_cls=None) -> Any:
    """Type-check and bound-check one option value: a trainer option against
    :data:`OPTION_RULES`, a model option against its declaration in ``model_cls``'s signature
    (the same check the model runs when it is built).

    Args:
        section: ``'model'``, ``'train'`` or ``'cli'``.
        key: the option name.
        value: the value as given (YAML-typed, or a string from the command line).
        reference: the option's default (its type is used for options without a rule).
        source: where the value came from (named in the error).
        label: how the error names the option (default ``option '<key>'``).
        model_cls: the model class (``section='model'``).

    Returns:
        The value converted to the option's type (``'1e-3'`` -> ``0.001``, ``2.0`` -> ``2``
        for integers, lists -> tuples).

    Raises:
        ConfigError: naming the source, the option, the expected type and bounds, and the
            value.
    """
    rule = _rule_for(section, key, reference, model_cls)
    if rule is None:
        return value
    return convert(value, rule, source, key, label=label)


def neutral_values(model_classes) -> dict[str, Any]:
    """``{option: neutral value}`` over ``model_classes``: the options added after results were
    stored (declared with :class:`~mmssl_pyg.utils.options.Neutral`)."""
    out: dict[str, Any] = {}
    for cls in model_classes:
        for name, opt in declared_options(cls).items():
            if opt.has_neutral:
                if out.get(name, opt.neutral) != opt.neutral:
                    raise ConfigError(f'option {name!r} has two neutral values: '
                                      f'{out[name]!r} and {opt.neutral!r} ({cls.__name__})')
                out[name] = opt.neutral
    return out


def stored_model_kwargs(model_cls, model_kwargs: dict[str, Any]) -> dict[str, Any]:
    """``model_kwargs`` as results stored before later options and renames recorded them: an
    option at its neutral value is left out, a renamed option is under its former name (see
    :mod:`mmssl_pyg.utils.options`). Benchmark unit keys are built from this, so stored units
    keep their hashes."""
    options = declared_options(model_cls)
    out = {}
    for name, value in model_kwargs.items():
        opt = options.get(name)
        if opt is not None and opt.has_neutral and value == opt.neutral:
            continue
        out[opt.formerly if opt is not None and opt.formerly else name] = value
    return out


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
