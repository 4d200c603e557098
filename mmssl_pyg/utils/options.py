"""Options declared in a signature: the type, bounds or choices of a model option live in its
constructor's annotation, and everything else (the check at construction, the command line's,
the presets' and the tuner's checks, benchmark unit keys) is derived from there.

A model declares each keyword like PyG does, with the extras attached to the annotation::

    def __init__(self, graph, embedding_dim: PositiveInt = 64, dropout: Ratio = 0.5,
                 cl_pairing: Annotated[ClPairing, Neutral('overall')] = 'overall'): ...

- :class:`Range` bounds a number (each number of a ``tuple[...]`` option);
- :class:`Choice` lists the valid values of a string option (``None`` among them when the
  annotation is ``str | None``);
- :class:`NoneMeans` says what ``None`` means for an ``int | None`` option (in the error);
- :class:`Neutral` marks an option added after results were stored, with the value that
  reproduces the code before it: benchmark unit keys leave the option out at that value;
- :class:`Formerly` records an option's earlier name: stored unit keys used it, and a model
  built from saved options with the old name (a checkpoint) still gets the value.

:func:`declared_options` reads the declarations of a class; :func:`check_declared` checks and
converts the values of a call against them (:class:`~mmssl_pyg.models.base.Recommender` runs
it at every construction). Options whose annotation has no simple type (a path, a mapping) are
left to the model. The conversion (:func:`convert`) is the one the trainer's options use too.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import numbers
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any

from .yamlio import load_yaml


class ConfigError(ValueError):
    """A bad option name or value in a preset, a config file or a ``key=value`` override."""


# ---------------------------------------------------------------------------------------------
# what an annotation may carry


@dataclass(frozen=True)
class Range:
    """Bounds of a number option, or of each number of a ``tuple`` option (``None``:
    unbounded); ``low_open`` / ``high_open`` exclude the bound."""
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False


class Choice:
    """The valid values of an option: ``Choice('overall', 'items', 'views')``."""

    def __init__(self, *values: Any):
        self.values = values

    def __repr__(self) -> str:
        return f'Choice{self.values!r}'


@dataclass(frozen=True)
class NoneMeans:
    """What ``None`` means for an optional option, e.g. ``NoneMeans('every item column')``."""
    text: str


@dataclass(frozen=True)
class Neutral:
    """The value of an option added after results were stored that reproduces the code before
    it; benchmark unit keys leave the option out at that value, so stored units keep their
    hashes."""
    value: Any


@dataclass(frozen=True)
class Formerly:
    """The option's earlier name (stored unit keys and saved run options use it)."""
    name: str


#: Common shapes of a number option.
PositiveInt = Annotated[int, Range(1)]
NonNegativeInt = Annotated[int, Range(0)]
Positive = Annotated[float, Range(0, low_open=True)]
NonNegative = Annotated[float, Range(0)]
#: ``[0, 1)``: a dropout or pruning ratio.
Ratio = Annotated[float, Range(0, 1, high_open=True)]
#: ``[0, 1]``: a mixing weight.
UnitInterval = Annotated[float, Range(0, 1)]


# ---------------------------------------------------------------------------------------------
# rules


@dataclass(frozen=True)
class Rule:
    """Type and bounds of one option, as checked by :func:`convert`.

    Args:
        kind: ``int``, ``float``, ``bool``, ``str`` or ``tuple``.
        low, high: bounds (``None``: unbounded); ``low_open`` / ``high_open`` exclude them.
        optional: ``None`` is a valid value; ``none_means`` says what it means.
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
    none_means: str | None = None

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
        if not self.optional:
            return text
        return text + (f' (or null: {self.none_means})' if self.none_means else ' (or null)')


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(x)


_SIMPLE = (bool, int, float, str)


def rule_of(annotation: Any) -> Rule | None:
    """The :class:`Rule` of an (evaluated) annotation, or ``None`` when it has no simple type
    (a path, a mapping, a union of several types without a :class:`Choice`)."""
    base, extras = annotation, ()
    if typing.get_origin(annotation) is Annotated:
        base, *extras = typing.get_args(annotation)
    extra = {type(e): e for e in extras}
    optional = False
    if typing.get_origin(base) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(base) if a is not type(None)]
        optional = len(args) < len(typing.get_args(base))
        base = args[0] if len(args) == 1 else None
    none_means = extra[NoneMeans].text if NoneMeans in extra else None
    if Choice in extra:
        values = extra[Choice].values
        return Rule(str, optional=optional or None in values, none_means=none_means,
                    choices=tuple(v for v in values if v is not None))
    bounds = dataclasses.asdict(extra.get(Range, Range()))
    if typing.get_origin(base) is tuple:
        args = typing.get_args(base)
        length = None if len(args) == 2 and args[1] is Ellipsis else len(args)
        item = Rule(args[0], **bounds) if args and args[0] in _SIMPLE else None
        return Rule(tuple, item=item, length=length, optional=optional, none_means=none_means)
    if base in _SIMPLE:
        return Rule(base, **bounds, optional=optional, none_means=none_means)
    return None


# ---------------------------------------------------------------------------------------------
# declarations of a class


_MISSING = object()


@dataclass(frozen=True)
class Option:
    """One keyword of a constructor: its default, :class:`Rule` (``None``: unchecked),
    :class:`Neutral` value (``has_neutral``) and former name."""
    name: str
    default: Any
    rule: Rule | None
    neutral: Any = _MISSING
    formerly: str | None = None

    @property
    def has_neutral(self) -> bool:
        return self.neutral is not _MISSING


@functools.cache
def declared_options(cls: type) -> dict[str, Option]:
    """``{keyword: Option}`` of ``cls.__init__`` after ``self`` and ``graph``, in signature
    order (``**kwargs`` and ``*args`` are left out)."""
    init = inspect.unwrap(cls.__init__)
    hints = typing.get_type_hints(init, include_extras=True)
    out = {}
    for p in list(inspect.signature(init).parameters.values())[1:]:
        if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) or p.name == 'graph':
            continue
        hint = hints.get(p.name)
        extras = typing.get_args(hint)[1:] if typing.get_origin(hint) is Annotated else ()
        marks = {type(e): e for e in extras}
        out[p.name] = Option(
            p.name, None if p.default is p.empty else p.default,
            None if hint is None else rule_of(hint),
            marks[Neutral].value if Neutral in marks else _MISSING,
            marks[Formerly].name if Formerly in marks else None)
    return out


def check_declared(cls: type, arguments: dict[str, Any]) -> dict[str, Any]:
    """``arguments`` (keyword -> value of one call of ``cls``) with each declared option
    checked and converted (:func:`convert`); :class:`ConfigError` names the class, the option
    and what it expects."""
    options = declared_options(cls)
    out = dict(arguments)
    for name, value in arguments.items():
        opt = options.get(name)
        if opt is not None and opt.rule is not None:
            out[name] = convert(value, opt.rule, cls.__name__, name)
    return out


def current_names(cls: type, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with each option given under its :class:`Formerly` name moved to its name
    (options saved before a rename, e.g. in a checkpoint); an option given under both names
    is an error."""
    out = dict(kwargs)
    for opt in declared_options(cls).values():
        if opt.formerly is not None and opt.formerly in out:
            if opt.name in out:
                raise ConfigError(f'{cls.__name__}: {opt.formerly!r} is the former name of '
                                  f'{opt.name!r}; give one of them')
            out[opt.name] = out.pop(opt.formerly)
    return out


# ---------------------------------------------------------------------------------------------
# one value against its rule


def convert(value: Any, rule: Rule, source: str, key: str, element: bool = False,
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
        out = tuple(convert(v, rule.item, source, key, True, label) if rule.item else v
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
    # numbers (numpy's too)
    if isinstance(value, bool):
        raise bad()
    if isinstance(value, str):
        try:
            value = float(value.strip()) if kind is float or not value.strip().lstrip(
                '+-').isdigit() else int(value.strip())
        except ValueError:
            raise bad() from None
    if not isinstance(value, numbers.Real):
        raise bad()
    if kind is int:
        if not isinstance(value, numbers.Integral):
            if not (math.isfinite(value) and float(value).is_integer()):
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
