"""Paired seeds: the same seed gives every model the same initial ID embeddings.

:func:`~mmssl_pyg.training.seed_everything` seeds the global random streams, but each model
draws its parameters from them in its own order (MMSSL builds its generator and attention
between the ID tables and their initialisation), so two models built after the same seed start
from different ID embeddings. :func:`pair_id_embeddings` redraws a model's user and item ID
tables from generators seeded by the seed and the table alone: two models with tables of the
same shape and the same initialisation rule (:attr:`Recommender.id_init
<mmssl_pyg.models.base.Recommender.id_init>`) then start from identical ID embeddings, whatever
else they build. The mini-batch stream is paired already: the trainer seeds the sampler's own
generator with the seed, so models with the same batch size draw the same batches.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

#: Attribute pairs that hold a model's ID embedding tables (``torch.nn.Embedding``).
ID_TABLE_NAMES = (('user_emb', 'item_emb'), ('user_id', 'item_id'))
ID_INITS = {'xavier_uniform': torch.nn.init.xavier_uniform_,
            'xavier_normal': torch.nn.init.xavier_normal_}
_ROLES = ('user', 'item')


def id_embedding_tables(model: torch.nn.Module) -> dict[str, Tensor]:
    """``{'user': weight, 'item': weight}`` of the model's ID tables (see
    :data:`ID_TABLE_NAMES`); empty for a model without them (popularity)."""
    for user_name, item_name in ID_TABLE_NAMES:
        user, item = getattr(model, user_name, None), getattr(model, item_name, None)
        if isinstance(user, torch.nn.Embedding) and isinstance(item, torch.nn.Embedding):
            return {'user': user.weight, 'item': item.weight}
    return {}


def _stream_seed(seed: int, role: str) -> int:
    return (int(seed) * 1_000_003 + _ROLES.index(role) + 1) % 2**63


def _check_init(weight: Tensor, init: str, what: str) -> None:
    """Refuse to redraw a table that the model did not initialise with ``init`` (a model
    whose initialisation changed without updating ``id_init``)."""
    if weight.numel() < 1000:  # too few values to tell
        return
    fan_out, fan_in = weight.shape
    std = math.sqrt(2.0 / (fan_in + fan_out))  # both Xavier rules have this std
    bound = math.sqrt(3.0) * std                # the uniform rule's bound
    w = weight.detach().float()
    measured = float(w.std())
    beyond = float((w.abs() > bound * (1 + 1e-5)).float().mean())
    uniform_like = beyond == 0.0
    if abs(measured / std - 1) > 0.2 or uniform_like != (init == 'xavier_uniform'):
        raise ValueError(
            f'{what} does not look {init}-initialised (std {measured:.3g}, expected {std:.3g}; '
            f'{beyond:.1%} of the values beyond the uniform bound {bound:.3g}), so paired seeds '
            f'would change its initialisation. Set the class attribute id_init to the rule the '
            f'model uses, or train without paired initialisation.')


@torch.no_grad()
def pair_id_embeddings(model: torch.nn.Module, seed: int) -> list[str]:
    """Redraw the model's ID tables from ``seed`` alone (in place).

    The user table is drawn from a CPU generator seeded with a function of ``(seed, 'user')``,
    the item table from one of ``(seed, 'item')``, with the model's own rule ``model.id_init``
    (``'xavier_uniform'`` or ``'xavier_normal'``); the global random streams are not touched.
    Call it right after building the model.

    Returns:
        the roles redrawn (``['user', 'item']``, or ``[]`` for a model without ID tables).

    Raises:
        ValueError: ``id_init`` is unknown, or a table does not match it (see
            :attr:`~mmssl_pyg.models.base.Recommender.id_init`).
    """
    tables = id_embedding_tables(model)
    init = getattr(model, 'id_init', 'xavier_uniform')
    if tables and init not in ID_INITS:
        raise ValueError(f'{type(model).__name__}.id_init is {init!r}; paired seeds know '
                         f'{sorted(ID_INITS)}')
    for role, weight in tables.items():
        _check_init(weight, init, f'{type(model).__name__} {role} ID table')
        g = torch.Generator().manual_seed(_stream_seed(seed, role))
        fresh = torch.empty(weight.shape, dtype=torch.float32)
        ID_INITS[init](fresh, generator=g)
        weight.copy_(fresh.to(weight))
    return list(tables)
