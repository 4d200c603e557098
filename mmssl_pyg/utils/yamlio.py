"""YAML that reads a number as the number typed.

PyYAML implements YAML 1.1, where ``010`` is the octal 8, ``0123`` is 83 and ``1:30`` is the
sexagesimal 90. Nobody writing ``patience=010`` on a command line or in a config file means
that, so options and config files are read with :func:`load_yaml`: YAML 1.2's integers
(decimal, ``0x`` hexadecimal, ``0o`` octal) and floats (``1e-3`` included); anything else
(``1:30``, ``1_000``) stays a string, which the option checks then refuse or read as written.
"""
from __future__ import annotations

import re
from typing import Any

import yaml

_INT = 'tag:yaml.org,2002:int'
_FLOAT = 'tag:yaml.org,2002:float'


class Yaml12Loader(yaml.SafeLoader):
    """:class:`yaml.SafeLoader` with YAML 1.2 numbers (no octal ``0``-prefix, no base 60)."""


Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_INT, _FLOAT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
Yaml12Loader.add_implicit_resolver(
    _INT, re.compile(r'^(?:[-+]?[0-9]+|0x[0-9a-fA-F]+|0o[0-7]+)$'), list('-+0123456789'))
Yaml12Loader.add_implicit_resolver(
    _FLOAT, re.compile(r'''^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?
                        |[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$''', re.X),
    list('-+0123456789.'))


def _construct_int(loader: yaml.SafeLoader, node: yaml.Node) -> int:
    text = loader.construct_scalar(node)
    if text.startswith(('0x', '0o')):
        return int(text, 16 if text[1] == 'x' else 8)
    return int(text, 10)  # '010' -> 10, as typed


def _construct_float(loader: yaml.SafeLoader, node: yaml.Node) -> float:
    text = loader.construct_scalar(node).lower()
    if text.endswith(('.inf', '.nan')):
        return float(text.replace('.', ''))
    return float(text)


Yaml12Loader.add_constructor(_INT, _construct_int)
Yaml12Loader.add_constructor(_FLOAT, _construct_float)


def load_yaml(stream: Any) -> Any:
    """``yaml.safe_load`` with YAML 1.2 numbers (see the module docstring)."""
    return yaml.load(stream, Loader=Yaml12Loader)  # noqa: S506 - a SafeLoader subclass
