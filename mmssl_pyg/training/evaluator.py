"""Full-ranking evaluation: every item is a candidate, the user's training items excluded.

Users with held-out items in the split are ranked in blocks: a block's scores are
``user_emb[block] @ item_emb.T`` (``block x n_items``, never ``n_users x n_items``), the
block's training items are set to ``-inf`` and the top ``max(ks)`` items are kept. Metrics come
from PyG's :mod:`torch_geometric.metrics.link_pred` (``LinkPredRecall``, ``LinkPredPrecision``,
``LinkPredNDCG``, ``LinkPredHitRatio``), whose definitions are the standard ones of the
paper's protocol, checked against a brute-force reference in ``tests/training/test_evaluator.py``:

* Recall@K = hits in the top K / number of held-out items of the user;
* Precision@K = hits in the top K / K;
* NDCG@K = DCG@K / IDCG@K with ``DCG = sum_r rel_r / log2(r + 1)`` (ranks from 1) and the ideal
  DCG over ``min(|held-out|, K)`` hits;
* Hit@K = 1 when at least one held-out item is in the top K;

each averaged over the users that have held-out items in the split.

Under data-parallel training (``distributed``, a
:class:`~mmssl_pyg.training.distributed.DistContext`) process ``r`` of ``W`` ranks the users
``r, r + W, ...`` of that list, and the per-metric sums and user counts are all-reduced before
the division: the result equals the single-process one up to round-off (PyG sums each block's
per-user values in float32, and the blocks differ).
"""
from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from torch import Tensor
from torch_geometric.metrics import (
    LinkPredHitRatio,
    LinkPredMetricCollection,
    LinkPredNDCG,
    LinkPredPrecision,
    LinkPredRecall,
)

from ..data.graph import RecGraph, csr_rows, unique_edges
from ..nn.topk import _csr_gather, blockwise_topk
from .options import DEFAULT_KS, METRIC_NAMES, check_cutoffs, check_option

SPLITS = ('val', 'test')


def _metric_collection(ks: Sequence[int]) -> tuple[LinkPredMetricCollection, dict[str, str]]:
    metrics, names = {}, {}
    for k in ks:
        for name, cls in zip(METRIC_NAMES, (LinkPredRecall, LinkPredPrecision, LinkPredNDCG,
                                            LinkPredHitRatio)):
            metrics[f'{name}_{k}'] = cls(k)
            names[f'{name}_{k}'] = f'{name}@{k}'
    return LinkPredMetricCollection(metrics), names


def heldout_pairs(graph: RecGraph, split: str) -> Tensor:
    """Distinct ``[2, n]`` (user, item) pairs of ``split`` (``'val'`` or ``'test'``)."""
    if split not in SPLITS:
        raise ValueError(f"split must be 'val' or 'test', got {split!r}")
    ei = graph.val_edge_index if split == 'val' else graph.test_edge_index
    return unique_edges(ei, graph.num_items)


def exclusion_rows(graph: RecGraph, split: str = 'val', exclude_val_at_test: bool = False,
                   ) -> tuple[Tensor, Tensor]:
    """CSR ``(rowptr, item)`` of the items that are never ranked for each user: the training
    items, plus the validation items when ``split == 'test'`` and ``exclude_val_at_test``."""
    ei = graph.train_edge_index.long()
    if split == 'test' and exclude_val_at_test:
        ei = torch.cat([ei, graph.val_edge_index.long().to(ei.device)], dim=1)
    return csr_rows(ei, graph.num_users)


@torch.no_grad()
def evaluate_embeddings(user_emb: Tensor, item_emb: Tensor, graph: RecGraph,
                        split: str = 'val', ks: Sequence[int] = DEFAULT_KS,
                        exclude_val_at_test: bool = False, batch_size: int = 1024,
                        progress: bool = False, distributed=None) -> dict[str, float]:
    """Full-ranking metrics of inner-product scores ``user_emb @ item_emb.T``.

    Returns ``{'recall@10': ..., 'precision@10': ..., 'ndcg@10': ..., 'hit@10': ..., ...}``
    (Python floats) averaged over the users with held-out items in ``split`` (all ``0.0``
    when the split is empty). ``distributed``: a
    :class:`~mmssl_pyg.training.distributed.DistContext`; each process ranks its share of the
    users and the sums are all-reduced (every process gets the same result).
    """
    ks = _checked_ks(ks)
    device = user_emb.device
    max_k = max(ks)
    pairs = heldout_pairs(graph, split).to(device)
    ex_rowptr, ex_col = exclusion_rows(graph, split, exclude_val_at_test)
    ex_rowptr, ex_col = ex_rowptr.to(device), ex_col.to(device)
    ho_rowptr, ho_col = csr_rows(pairs, graph.num_users)
    users = torch.nonzero(ho_rowptr[1:] > ho_rowptr[:-1]).view(-1)
    sharded = distributed is not None and distributed.enabled
    if sharded:
        users = users[distributed.rank::distributed.world_size]
    collection, names = _metric_collection(ks)
    # Sums over users in float64 (PyG's accumulators are float32 by default).
    collection = collection.to(device, torch.float32 if device.type == 'mps' else torch.float64)
    starts = range(0, users.numel(), batch_size)
    if progress:
        from tqdm.auto import tqdm
        starts = tqdm(starts, desc=f'eval {split}', unit='block', leave=False)
    for start in starts:
        block = users[start:start + batch_size]
        values, index = blockwise_topk(user_emb[block], item_emb, max_k, block_size=block.numel(),
                                       exclude_rowptr=ex_rowptr, exclude_col=ex_col,
                                       query_ids=block)
        # A user with fewer than max_k rankable items gets excluded items (score -inf) at the
        # tail of the top-k: replace them by an id that matches no held-out item.
        index = index.masked_fill(values == float('-inf'), graph.num_items)
        row, col = _csr_gather(ho_rowptr, ho_col, block)
        collection.update(index, torch.stack([row, col]))
    if sharded:
        return _reduced_metrics(collection, names, distributed)
    return {names[key]: float(value) for key, value in collection.compute().items()}


def _reduced_metrics(collection, names: dict[str, str], distributed) -> dict[str, float]:
    """``accum / total`` of every metric after summing both over the processes (computed
    here, not by ``compute()``, which would sync again when torchmetrics is installed)."""
    keys = list(collection.keys())
    accum = torch.stack([collection[k].accum.double() for k in keys])
    total = torch.stack([collection[k].total.double() for k in keys])
    both = distributed.all_reduce_(torch.cat([accum, total]))
    accum, total = both[:len(keys)], both[len(keys):]
    return {names[k]: float(a / t) if t > 0 else 0.0
            for k, a, t in zip(keys, accum.tolist(), total.tolist())}


@torch.no_grad()
def evaluate(model, graph: RecGraph, split: str = 'val', ks: Sequence[int] = DEFAULT_KS,
             exclude_val_at_test: bool = False, batch_size: int = 1024,
             progress: bool = False, distributed=None) -> dict[str, float]:
    """Full-ranking evaluation of ``model`` on ``split`` (``'val'`` or ``'test'``).

    Calls ``model.get_embedding()`` once in eval mode (restoring the previous mode after) and
    ranks all items for every user with held-out items in ``split``, excluding the user's
    training items (and validation items at test when ``exclude_val_at_test``). ``model`` and
    ``graph`` may live on any device; the metrics are computed on the embeddings' device.
    ``distributed``: rank a share of the users per process and all-reduce (see
    :func:`evaluate_embeddings`).

    Returns:
        ``{'recall@K', 'precision@K', 'ndcg@K', 'hit@K'}`` for each ``K`` in ``ks``.
    """
    check_cutoffs(_checked_ks(ks), graph.num_items, 'ks')  # a model's top-k: at most all items
    user_emb, item_emb = inference_embeddings(model)
    return evaluate_embeddings(user_emb, item_emb, graph, split, ks, exclude_val_at_test,
                               batch_size, progress, distributed)


def _checked_ks(ks) -> tuple[int, ...]:
    """Sorted distinct cut-offs, each a positive integer (the option rule of ``ks``)."""
    if not isinstance(ks, (int, str)):
        ks = list(dict.fromkeys(k.item() if hasattr(k, 'item') else k for k in ks))
    return tuple(sorted(set(check_option('train', 'ks', ks, source='', label='ks'))))


@torch.no_grad()
@contextlib.contextmanager
def eval_mode(model):
    """Run the block with ``model`` in eval mode (dropout off), restoring its mode after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def inference_embeddings(model) -> tuple[Tensor, Tensor]:
    """``model.get_embedding()`` in eval mode (dropout off), restoring the model's mode."""
    with eval_mode(model):
        return model.get_embedding()


def _disc(k: int, device) -> Tensor:
    return 1.0 / torch.log2(torch.arange(2, k + 2, device=device, dtype=torch.float64))


@torch.no_grad()
def per_user_metrics(user_emb: torch.Tensor, item_emb: torch.Tensor, graph, split: str = 'test',
                     k: int = 20, exclude_val_at_test: bool = False,
                     batch_size: int = 1024) -> dict[str, Tensor]:
    """Per-user Recall/NDCG@k and per-item hit counts of ``split``, ranked blockwise.

    Same protocol as :func:`evaluate_embeddings` (full ranking, training items
    excluded, ideal DCG over ``min(|held-out|, k)``); never allocates ``users x items``: each
    block of ``batch_size`` users is ranked with :func:`mmssl_pyg.nn.topk.blockwise_topk`.

    Returns (CPU tensors): ``users`` (ids with held-out items), ``recall``, ``ndcg``, ``hit``
    (per user), ``item_hits`` (per item: held-out pairs of the item found in the user's top k)
    and ``item_heldout`` (per item: held-out pairs).
    """
    device = user_emb.device
    n_items = graph.num_items
    pairs = heldout_pairs(graph, split).to(device)
    keys = pairs[0] * n_items + pairs[1]  # sorted: heldout_pairs comes from torch.unique
    ex_rowptr, ex_col = (t.to(device) for t in exclusion_rows(graph, split, exclude_val_at_test))
    ho_rowptr, _ = csr_rows(pairs, graph.num_users)
    counts = ho_rowptr[1:] - ho_rowptr[:-1]
    users = torch.nonzero(counts > 0).view(-1)
    disc = _disc(k, device)
    idcg_table = torch.cumsum(disc, 0)
    item_hits = torch.zeros(n_items, dtype=torch.long, device=device)
    recall, ndcg, hit = [], [], []
    for start in range(0, users.numel(), batch_size):
        block = users[start:start + batch_size]
        values, index = blockwise_topk(user_emb[block], item_emb, k, block_size=block.numel(),
                                       exclude_rowptr=ex_rowptr, exclude_col=ex_col,
                                       query_ids=block)
        valid = values != float('-inf')
        query = block.view(-1, 1) * n_items + index
        pos = torch.searchsorted(keys, query).clamp(max=max(keys.numel() - 1, 0))
        hits = (keys[pos] == query) & valid
        n_ho = counts[block]
        dcg = (hits.double() * disc).sum(1)
        idcg = idcg_table[n_ho.clamp(max=k) - 1]
        ndcg.append(dcg / idcg)
        recall.append(hits.sum(1).double() / n_ho.double())
        hit.append(hits.any(1).double())
        item_hits += torch.bincount(index[hits], minlength=n_items)
    item_heldout = torch.bincount(pairs[1], minlength=n_items)

    def cat(xs):
        return torch.cat(xs).cpu() if xs else torch.zeros(0, dtype=torch.float64)
    return {'users': users.cpu(), 'recall': cat(recall), 'ndcg': cat(ndcg), 'hit': cat(hit),
            'item_hits': item_hits.cpu(), 'item_heldout': item_heldout.cpu()}
