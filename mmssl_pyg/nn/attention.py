"""Multi-head self-attention across the modalities of each node (MMSSL, Eq. 9)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


class CrossModalAttention(torch.nn.Module):
    r"""Modality-wise dependency encoder of Wei et al., `"Multi-Modal Self-Supervised Learning
    for Recommendation" <https://arxiv.org/abs/2302.10632>`_ (WWW 2023), Eq. 9.

    Each node's :math:`M` modality-specific vectors :math:`\mathbf{H}^1, \dots, \mathbf{H}^M`
    are a sequence of :math:`M` tokens. For every head :math:`h` of :math:`H`:

    .. math::
        \mathbf{q}^h = \mathbf{H}\mathbf{W}_Q^h,\quad \mathbf{k}^h = \mathbf{H}\mathbf{W}_K^h,
        \quad \mathbf{v}^h = \mathbf{H}\mathbf{W}_V^h,\quad
        \mathbf{o}^h = \mathrm{softmax}\Big(\frac{\mathbf{q}^h {\mathbf{k}^h}^{\top}}
        {\sqrt{d/H}}\Big)\mathbf{v}^h

    over the :math:`M` tokens; the heads are concatenated and projected back to :math:`d` by
    :math:`\mathbf{W}_O`. (The released code derives the key from the query and does not
    project the values, which collapses Eq. 9 to one linear map; this layer attends.) Use
    :meth:`pool` (mean over modalities) for :math:`\mathbf{h}_u`, :math:`\mathbf{h}_i`.

    Args:
        channels: :math:`d`, divisible by ``heads``.
        heads: number of heads :math:`H` (default ``4``).
        bias: add biases to the four projections (default ``False``).

    Shapes:
        - **input:** :math:`(N, M, d)`
        - **output:** :math:`(N, M, d)` (equivariant to the order of the :math:`M` tokens)
    """

    def __init__(self, channels: int, heads: int = 4, bias: bool = False):
        super().__init__()
        if channels % heads:
            raise ValueError(f'channels ({channels}) must be divisible by heads ({heads})')
        self.channels = channels
        self.heads = heads
        self.query = torch.nn.Linear(channels, channels, bias=bias)
        self.key = torch.nn.Linear(channels, channels, bias=bias)
        self.value = torch.nn.Linear(channels, channels, bias=bias)
        self.out = torch.nn.Linear(channels, channels, bias=bias)
        self.reset_parameters()

    def reset_parameters(self):
        for lin in (self.query, self.key, self.value, self.out):
            torch.nn.init.xavier_uniform_(lin.weight)
            if lin.bias is not None:
                torch.nn.init.zeros_(lin.bias)

    def forward(self, x: Tensor, return_attention_weights: bool = False
                ) -> Tensor | tuple[Tensor, Tensor]:
        """Attend across the modality tokens of every node.

        With ``return_attention_weights=True`` also returns the softmax weights, shape
        :math:`(N, H, M, M)` (row ``a`` of head ``h``: how token ``a`` attends to each token).
        """
        o, att = self._attend(x)
        out = self.out(o)
        att = att.permute(0, 3, 1, 2)  # [n, h, a, b]
        return (out, att) if return_attention_weights else out

    def pooled(self, x: Tensor) -> Tensor:
        """``pool(self(x))``, the mean over the modality tokens ``(N, M, d) -> (N, d)``, with
        the mean taken before the output projection (it is linear, bias included: the same
        values, one :math:`M`-th of its products)."""
        return self.out(self.pool(self._attend(x)[0]))

    def _attend(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The heads' outputs concatenated, before :math:`\\mathbf{W}_O`, ``(N, M, d)``, and
        the softmax weights ``(N, a, b, H)``."""
        n, m, d = x.shape
        dh = d // self.heads
        # one product for the three projections (the same weights as query / key / value),
        # over the tokens as rows of one matrix
        qkv = F.linear(x.reshape(n * m, d),
                       torch.cat([lin.weight for lin in (self.query, self.key, self.value)]),
                       None if self.query.bias is None else
                       torch.cat([lin.bias for lin in (self.query, self.key, self.value)]))
        q, k, v = qkv.view(n, m, 3, self.heads, dh).unbind(2)
        # M is small (one token per modality): broadcast products instead of N*H batched
        # M x M matrix products (the same sums; several times faster on CPU)
        att = (q.unsqueeze(2) * k.unsqueeze(1)).sum(-1) / math.sqrt(dh)   # [n, a, b, h]
        att = att.softmax(dim=2)
        o = (att.unsqueeze(-1) * v.unsqueeze(1)).sum(2).reshape(n, m, d)
        return o, att

    @staticmethod
    def pool(x: Tensor) -> Tensor:
        """Mean over the modality tokens: ``(N, M, d) -> (N, d)``."""
        return x.mean(dim=1)

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}({self.channels}, heads={self.heads})'
