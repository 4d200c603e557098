r"""Aggregation over a fixed user-item graph whose edge weights are learned (GRCN).

:class:`EdgeWeightedGraph` keeps the sparsity pattern of the training edges in both CSR
orders (users x items and items x users) and runs the three edge-level operations a model with
learned edge weights needs as fused sparse kernels, with hand-written backward passes:

* :meth:`~EdgeWeightedGraph.to_users`: :math:`\mathbf{y}_u = \sum_{e=(u,i)} w_e \mathbf{x}_i`;
* :meth:`~EdgeWeightedGraph.to_items`: :math:`\mathbf{y}_i = \sum_{e=(u,i)} w_e \mathbf{x}_u`;
* :meth:`~EdgeWeightedGraph.edge_dot`: :math:`s_e = \langle \mathbf{a}_u, \mathbf{b}_i \rangle`
  for every edge :math:`e = (u, i)` (a sampled dense-dense product);
* :meth:`~EdgeWeightedGraph.softmax`: :math:`\alpha_e = \exp(s_e) / \sum_{e' \ni n} \exp(s_{e'})`
  over the edges of each user (or each item) :math:`n`, with a written-out backward.

Gradients flow to the edge weights and to the node features. Neither direction ever
materialises an ``[E, d]`` message tensor (the per-edge gather-multiply-scatter of
:class:`~torch_geometric.nn.conv.MessagePassing`); the gradient of a weight is itself an
``edge_dot`` and the gradient of the features an aggregation the other way. Edge weights are
given in the order of the ``edge_index`` the graph was built from. The CSR indices are int32
when the graph fits (the sparse kernels otherwise convert int64 indices on every call), and every
sparse-dense product writes straight into its output (:func:`_spmm`: a weighted embedding bag
per row on the CPU).

:func:`unit_rows` is ``F.normalize(x, dim=1)`` with a hand-written backward: GRCN normalises
its preferences and content vectors a dozen times a step, and autograd's backward of
``F.normalize`` takes about twice as many full-size operations.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


class EdgeWeightedGraph(torch.nn.Module):
    """The sparsity pattern of ``edge_index`` ``[2, E]`` (user, item; no duplicates) in both
    CSR orders, as non-persistent buffers (they move with the module)."""

    def __init__(self, edge_index: Tensor, num_users: int, num_items: int):
        super().__init__()
        self.num_users, self.num_items = int(num_users), int(num_items)
        u, i = edge_index.long()
        order_u = torch.argsort(u * num_items + i)           # edge order -> user-major order
        order_i = torch.argsort(i * num_users + u)           # edge order -> item-major order
        #: Whether ``edge_index`` is already in user-major order (then no reordering is done).
        self.user_major = bool((order_u == torch.arange(order_u.numel(),
                                                        device=order_u.device)).all())
        index = index_dtype(max(u.numel(), num_users, num_items))
        for name, val in [('order_u', order_u), ('order_i', order_i),
                          ('user', u), ('item', i),
                          ('crow_u', _crow(u[order_u], num_users).to(index)),
                          ('col_u', i[order_u].to(index)),
                          ('crow_i', _crow(i[order_i], num_items).to(index)),
                          ('col_i', u[order_i].to(index)),
                          ('ones', torch.ones(u.numel()))]:  # edge_dot's sampling pattern
            self.register_buffer(name, val, persistent=False)

    @property
    def num_edges(self) -> int:
        return int(self.user.numel())

    def _csr(self, w: Tensor, users_first: bool) -> Tensor:
        if users_first:
            values = w if self.user_major else w.index_select(0, self.order_u)
            return torch.sparse_csr_tensor(self.crow_u, self.col_u, values,
                                           (self.num_users, self.num_items),
                                           check_invariants=False)
        return torch.sparse_csr_tensor(self.crow_i, self.col_i, w.index_select(0, self.order_i),
                                       (self.num_items, self.num_users), check_invariants=False)

    def _dot(self, a: Tensor, b: Tensor) -> Tensor:
        """Raw (no autograd) ``<a[user_e], b[item_e]>`` in edge order."""
        ones = self.ones if self.ones.dtype == a.dtype else self.ones.to(a.dtype)
        pattern = self._csr(ones, True)
        s = torch.sparse.sampled_addmm(pattern, a, b.t(), beta=0.0).values()
        if self.user_major:
            return s
        out = torch.empty_like(s)
        out[self.order_u] = s
        return out

    def to_users(self, w: Tensor, x: Tensor) -> Tensor:
        """``[n_u, d]``: every user's sum of ``w_e * x[item_e]`` over its edges."""
        return _float32(_Aggregate.apply, self, w, x, True)

    def to_items(self, w: Tensor, x: Tensor) -> Tensor:
        """``[n_i, d]``: every item's sum of ``w_e * x[user_e]`` over its edges."""
        return _float32(_Aggregate.apply, self, w, x, False)

    def edge_dot(self, a: Tensor, b: Tensor) -> Tensor:
        """``[E]``: ``<a[user_e], b[item_e]>`` for user rows ``a`` and item rows ``b``."""
        return _float32(_EdgeDot.apply, self, a, b)

    def softmax(self, score: Tensor, over: str = 'users') -> Tensor:
        r"""Softmax of per-edge scores ``[E]`` or ``[E, k]`` (edge order; ``k`` independent
        columns) over the edges of each user (``over='users'``) or each item (``'items'``):
        the values of ``torch_geometric.utils.softmax(score, index)`` with ``index`` the
        user (item) of every edge (the segment's maximum subtracted, ``1e-16`` added to the
        denominator), with the backward written out: for the output :math:`\alpha` and its
        gradient :math:`\mathbf{g}`, :math:`\partial/\partial s_e = \alpha_e (g_e -
        \sum_{e' \ni n} g_{e'} \alpha_{e'})` over the edges :math:`e'` of the same node
        :math:`n`. Autograd's backward through the scatter ops takes about three times as many
        edge-size operations."""
        if over not in ('users', 'items'):
            raise ValueError(f"over must be 'users' or 'items', got {over!r}")
        users = over == 'users'
        return _EdgeSoftmax.apply(score, self.user if users else self.item,
                                  self.num_users if users else self.num_items)

    def extra_repr(self) -> str:
        return f'{self.num_users} users, {self.num_items} items, {self.num_edges} edges'


def index_dtype(largest: int) -> torch.dtype:
    """The CSR index type for counts up to ``largest``: int32 where it fits (what the sparse
    kernels use natively), int64 beyond."""
    return torch.int32 if largest < 2 ** 31 else torch.int64


def unit_rows(x: Tensor, eps: float = 1e-12) -> Tensor:
    r"""Every row of ``x`` ``[n, d]`` divided by its L2 norm (at least ``eps``): the values
    of ``F.normalize(x, dim=1, eps=eps)``, with the backward written out: for the output
    :math:`\mathbf{y}` and its gradient :math:`\mathbf{g}`, a row's gradient is
    :math:`(\mathbf{g} - \mathbf{y}\langle\mathbf{g}, \mathbf{y}\rangle) / \lVert\mathbf{x}\rVert`,
    or :math:`\mathbf{g} / \epsilon` where the norm is below ``eps``."""
    return _UnitRows.apply(x, eps)


class _UnitRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, eps: float):
        norm = torch.linalg.vector_norm(x, dim=1, keepdim=True)
        denom = norm.clamp_min(eps)
        y = x / denom
        ctx.save_for_backward(y, denom, norm >= eps)  # where clamp_min passes the gradient
        return y

    @staticmethod
    def backward(ctx, grad: Tensor):
        y, denom, scaled = ctx.saved_tensors
        along = (grad * y).sum(1, keepdim=True).mul_(scaled)
        return (y * along).neg_().add_(grad).div_(denom), None  # (grad - y * along) / denom


def _spmm(csr: Tensor, x: Tensor) -> Tensor:
    """``csr @ x`` (no autograd through ``csr``'s values).

    On the CPU a CSR matrix of ``x``'s dtype is multiplied as one weighted embedding bag per
    row (``F.embedding_bag`` with the row pointers as offsets, the column indices as indices
    and the values as ``per_sample_weights``): the same sum of ``value * x[col]`` over each
    row's entries, up to float round-off, and faster than the CSR kernel (0.6x as long for
    GRCN's TikTok graph, 1 thread). Elsewhere, and for a matrix without entries or a
    zero-width ``x`` (which ``embedding_bag`` refuses), the product is written straight into a
    new tensor: ``addmm_`` with ``beta=0`` ignores the tensor's contents (NaN included, as
    ``torch.addmm`` documents); ``torch.sparse.mm`` would first fill a zero tensor and copy it
    into the output, two extra passes over the result. Main's ``nn.conv._sparse_product``
    with ``fresh=True`` computes the same."""
    if (csr.layout == torch.sparse_csr and x.device.type == 'cpu' and csr.dtype == x.dtype
            and not (csr.requires_grad and torch.is_grad_enabled()) and csr._nnz() > 0
            and x.size(1) > 0):
        return F.embedding_bag(csr.col_indices(), x, csr.crow_indices(), mode='sum',
                               per_sample_weights=csr.values(), include_last_offset=True)
    return x.new_empty(csr.size(0), x.size(1)).addmm_(csr, x, beta=0)


def _float32(fn, graph: EdgeWeightedGraph, a: Tensor, b: Tensor, *rest):
    """Run ``fn`` on float32 inputs outside autocast: the sparse CSR kernels have no
    half-precision CPU implementation, and sums over neighbours are better kept in float32."""
    low = (torch.float16, torch.bfloat16)
    if torch.is_autocast_enabled(b.device.type) or a.dtype in low or b.dtype in low:
        with torch.autocast(b.device.type, enabled=False):
            return fn(graph, a.float(), b.float(), *rest)
    return fn(graph, a, b, *rest)


def _crow(sorted_rows: Tensor, num_rows: int) -> Tensor:
    counts = torch.bincount(sorted_rows, minlength=num_rows)
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)])


class _Aggregate(torch.autograd.Function):
    """``to_users`` (``users_first``) or ``to_items``; backward: the features' gradient is the
    aggregation the other way with the same weights, the weights' gradient an edge dot."""

    @staticmethod
    def forward(ctx, graph: EdgeWeightedGraph, w: Tensor, x: Tensor, users_first: bool):
        ctx.graph, ctx.users_first = graph, users_first
        ctx.save_for_backward(w, x)
        return _spmm(graph._csr(w, users_first), x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        graph, users_first = ctx.graph, ctx.users_first
        w, x = ctx.saved_tensors
        grad = grad.contiguous()
        grad_w = grad_x = None
        if ctx.needs_input_grad[1]:  # d/dw_e = <grad[dst_e], x[src_e]>
            grad_w = graph._dot(grad, x) if users_first else graph._dot(x, grad)
        if ctx.needs_input_grad[2]:
            grad_x = _spmm(graph._csr(w, not users_first), grad)
        return None, grad_w, grad_x, None


class _EdgeDot(torch.autograd.Function):
    """``edge_dot``; backward: both gradients are aggregations weighted by the incoming
    per-edge gradient."""

    @staticmethod
    def forward(ctx, graph: EdgeWeightedGraph, a: Tensor, b: Tensor):
        ctx.graph = graph
        a, b = a.contiguous(), b.contiguous()
        ctx.save_for_backward(a, b)
        return graph._dot(a, b)

    @staticmethod
    def backward(ctx, grad: Tensor):
        graph = ctx.graph
        a, b = ctx.saved_tensors
        grad_a = grad_b = None
        if ctx.needs_input_grad[1]:
            grad_a = _spmm(graph._csr(grad.contiguous(), True), b)
        if ctx.needs_input_grad[2]:
            grad_b = _spmm(graph._csr(grad, False), a)
        return None, grad_a, grad_b


class _EdgeSoftmax(torch.autograd.Function):
    """``EdgeWeightedGraph.softmax``: segment softmax over ``index`` (``num`` segments)."""

    @staticmethod
    def forward(ctx, score: Tensor, index: Tensor, num: int):
        size = (num, *score.shape[1:])
        peak = score.new_zeros(size).scatter_reduce_(
            0, index.view(-1, *[1] * (score.dim() - 1)).expand_as(score), score, 'amax',
            include_self=False)
        out = (score - peak.index_select(0, index)).exp_()
        total = score.new_zeros(size).index_add_(0, index, out).add_(1e-16)
        out = out.div_(total.index_select(0, index))
        ctx.save_for_backward(out, index)
        ctx.num = num
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        out, index = ctx.saved_tensors
        g_out = grad * out
        along = g_out.new_zeros((ctx.num, *out.shape[1:])).index_add_(0, index, g_out)
        return g_out.sub_(out * along.index_select(0, index)), None, None
