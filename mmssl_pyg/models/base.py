"""The small contract between models and the shared trainer / evaluator.

A model is built from a :class:`~mmssl_pyg.data.graph.RecGraph` and keyword
hyper-parameters, and supplies losses and embeddings; it never sees optimisers, the
sampler or the evaluator.

The trainer calls, per epoch::

    model.on_epoch_start(epoch)
    for batch in sampler:                       # Batch(users, pos, neg), distinct users
        if model.has_critic:                    # adversarial models only
            critic_out = model.critic_loss(batch)   # dict, key 'loss'; critic params step
        out = model.loss(batch)                 # dict, key 'loss' + named terms
    model.on_epoch_end(epoch)

``critic_loss`` and ``loss`` receive the same ``Batch`` object in that order, so a model
may cache its forward pass on it (``batch.cache``). Evaluation calls
``model.get_embedding()`` once under ``torch.no_grad()`` in eval mode and ranks items by
``user_emb @ item_emb.T``, blockwise.

Under data-parallel training (``torchrun``) every process runs this loop on its share of the
batches, with gradients averaged between processes after each backward pass; before
``on_epoch_end`` the trainer calls ``model.gather_epoch_state(all_gather)`` on every process,
so a model that collects state from its batches during the epoch (MMSSL's generated top-k
neighbours) can merge every process's share and all replicas stay identical. ``all_gather(t)``
returns the list of every process's ``t`` (rank order; the first dimension may differ). Models
never import ``torch.distributed``.

State that is not a parameter (a generated graph, a frozen kNN graph) must survive
``state_dict`` / ``load_state_dict`` (use ``get_extra_state`` / ``set_extra_state``) so
that a resumed run reproduces the uninterrupted one.

**Options.** A model's options are the keywords of its constructor, each declared once there
with its type, bounds or choices (:mod:`mmssl_pyg.utils.options`). Every construction checks
the given values against those declarations (:meth:`Recommender.__init_subclass__`); the
command line, presets, tuner and benchmarks derive their checks from the same declarations.
"""
from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..data.graph import RecGraph
from ..utils.options import check_declared, current_names


@dataclass
class Batch:
    """A mini-batch of (user, positive item, negative item) triples; users are distinct.

    ``final`` (optional, ``[B]`` bool) marks the users that no later mini-batch of the epoch
    draws again (set by the trainer, which draws an epoch's batches up front): a model that
    keeps per-user state from its last batch of an epoch (MMSSL's top-k neighbours) needs to
    compute it for those users only. ``None``: unknown, compute it for every user.
    """
    users: Tensor
    pos: Tensor
    neg: Tensor
    cache: dict = field(default_factory=dict)
    final: Tensor | None = None

    def to(self, device) -> Batch:
        final = None if self.final is None else self.final.to(device)
        return Batch(self.users.to(device), self.pos.to(device), self.neg.to(device),
                     final=final)

    def __len__(self) -> int:
        return int(self.users.numel())


def bpr_loss(pos_score: Tensor, neg_score: Tensor) -> Tensor:
    """Bayesian personalised ranking: ``-mean log sigmoid(pos - neg)``."""
    return torch.nn.functional.softplus(neg_score - pos_score).mean()


def l2_reg(*tensors: Tensor) -> Tensor:
    """``sum_t ||t||^2 / 2`` averaged over the batch size (first dim of the first tensor)."""
    n = tensors[0].size(0)
    return sum(t.pow(2).sum() for t in tensors) / (2 * max(n, 1))


def graph_signature(graph: RecGraph) -> tuple[int, int, int, int]:
    """``(users, items, training edges, a checksum of them)``: cheap, device-independent, and
    different for another graph (a model's adjacency and tables are sized by the graph it was
    built on)."""
    ei = graph.train_edge_index
    check = int((ei[0] * 1_000_003 + ei[1]).sum()) if ei.numel() else 0
    return graph.num_users, graph.num_items, int(ei.size(1)), check


class Recommender(torch.nn.Module):
    """Base class: see the module docstring for the contract.

    ``Model(graph)`` builds the model with its constructor defaults (each model's docstring
    says where they come from); :func:`mmssl_pyg.training.from_preset` builds it with the
    options ``mmssl-pyg train`` uses for a dataset.
    """

    #: Whether the trainer must run a critic step (``critic_loss``) before each model step.
    has_critic: bool = False
    #: Modalities the model needs (``0`` for ID-only models).
    min_modalities: int = 0
    #: ``False`` for models without parameters (popularity): the trainer then runs one epoch
    #: without mini-batches or optimiser, evaluates it and tests it.
    trainable: bool = True
    #: Initialisation of the ID embedding tables (``user_emb`` / ``item_emb``, or ``user_id`` /
    #: ``item_id``): ``'xavier_uniform'`` or ``'xavier_normal'``. Paired seeds
    #: (:func:`~mmssl_pyg.training.seeding.pair_id_embeddings`) redraw the tables with it.
    id_init: str = 'xavier_uniform'

    def __init_subclass__(cls, **kwargs):
        """Check the options of every construction against the constructor's declarations
        (:func:`~mmssl_pyg.utils.options.check_declared`; a value is converted to its declared
        type, e.g. a list to a tuple) before the constructor runs; an option saved under a
        former name is accepted under it."""
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get('__init__')
        if init is None:
            return
        signature = inspect.signature(init)

        @functools.wraps(init)
        def checked_init(self, *args, **kw):
            bound = signature.bind(self, *args, **current_names(cls, kw))
            arguments = check_declared(cls, dict(list(bound.arguments.items())[1:]))
            bound.arguments.update(arguments)
            init(*bound.args, **bound.kwargs)

        cls.__init__ = checked_init

    def __init__(self, graph: RecGraph):
        super().__init__()
        if len(graph.features) < self.min_modalities:
            raise ValueError(
                f'{type(self).__name__} needs at least {self.min_modalities} item modalities; '
                f'dataset {graph.name!r} has {graph.modalities or "none"}. Load a dataset with '
                f'<modality>_feat.npy files or pick an ID-only model (mf, lightgcn, sgl).')
        self.num_users = graph.num_users
        self.num_items = graph.num_items
        #: Which training graph the model was built on (:func:`graph_signature`): the trainer
        #: refuses another one.
        self.graph_signature = graph_signature(graph)

    def register_adjacency(self, graph: RecGraph, norm: str = 'sym') -> None:
        """Register the normalised training graph as buffers ``adj_ui`` (users x items) and
        ``adj_iu`` (items x users), moved with the model and left out of checkpoints."""
        adj_ui, adj_iu = graph.adjacency(norm)
        self.register_buffer('adj_ui', adj_ui, persistent=False)
        self.register_buffer('adj_iu', adj_iu, persistent=False)

    def loss(self, batch: Batch) -> dict[str, Tensor]:
        raise NotImplementedError

    def critic_loss(self, batch: Batch) -> dict[str, Tensor]:
        raise NotImplementedError(f'{type(self).__name__} has no critic')

    def critic_parameters(self) -> list[torch.nn.Parameter]:
        """Parameters stepped by the critic optimiser (excluded from the model optimiser)."""
        return []

    def model_parameters(self) -> list[torch.nn.Parameter]:
        critic = {id(p) for p in self.critic_parameters()}
        return [p for p in self.parameters() if id(p) not in critic]

    def get_embedding(self) -> tuple[Tensor, Tensor]:
        """Final ``(user_emb [n_u, d], item_emb [n_i, d])`` used for scoring."""
        raise NotImplementedError

    def on_epoch_start(self, epoch: int) -> None:
        pass

    def on_epoch_end(self, epoch: int) -> None:
        pass

    def gather_epoch_state(self, all_gather: Callable[[Tensor], list[Tensor]]) -> None:
        """Data-parallel training only: merge the state this process collected from its
        batches during the epoch with every other process's (called on every process, before
        :meth:`on_epoch_end`; each process must call ``all_gather`` the same number of times).
        Default: nothing to merge."""

    @torch.no_grad()
    def recommend(self, users: Tensor, k: int = 20, exclude_rowptr: Tensor | None = None,
                  exclude_col: Tensor | None = None, block_size: int = 1024,
                  return_scores: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Top-``k`` item ids ``[U, k]`` for ``users``, best first, optionally excluding each
        user's CSR row (``exclude_rowptr`` indexed by user id); ``block_size`` users are
        scored at once. With ``return_scores``: ``(items, scores)``. Uses the model's
        current mode (call :meth:`eval` first to switch dropout off)."""
        from ..nn.topk import blockwise_topk
        users = torch.as_tensor(users, dtype=torch.long)
        bad = users[(users < 0) | (users >= self.num_users)]
        if bad.numel():
            raise ValueError(f'user ids {bad.tolist()[:10]} are out of range: the model has '
                             f'users 0..{self.num_users - 1}. Fix: pass ids in that range')
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.num_items:
            raise ValueError(f'k must be an integer in 1..{self.num_items} (the number of '
                             f'items), got {k!r}')
        user_emb, item_emb = self.get_embedding()
        dev = user_emb.device
        users = users.to(dev)
        if exclude_rowptr is not None:
            exclude_rowptr, exclude_col = exclude_rowptr.to(dev), exclude_col.to(dev)
        scores, idx = blockwise_topk(user_emb[users], item_emb, k, block_size=block_size,
                                     exclude_rowptr=exclude_rowptr, exclude_col=exclude_col,
                                     query_ids=users)
        return (idx, scores) if return_scores else idx
