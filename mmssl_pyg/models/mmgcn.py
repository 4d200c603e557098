"""MMGCN: one graph convolution network per modality on the user-item graph."""
from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.graph import RecGraph
from ..nn.adjacency import sparse_transpose
from ..nn.conv import BipartiteConv
from ..nn.edge_weighted import unit_rows
from ..nn.features import FeatureNorm
from ..utils.options import Formerly, NoneMeans, NonNegative, PositiveInt, Range
from ._common import modality_features, register_features
from .base import Batch, Recommender, bpr_loss, l2_reg


class ModalityGCN(torch.nn.Module):
    r"""MMGCN's graph convolution for one modality (Eqs. 1-5 of the paper, "add" combination).

    Users start from a learned preference vector, items from their (projected) features; each
    layer :math:`l` computes, for every node with neighbours :math:`\mathcal{N}`,

    .. math::
        \mathbf{h} &= \mathrm{LeakyReLU}\Big(\frac{1}{|\mathcal{N}|}
            \sum_{j \in \mathcal{N}} \mathbf{W}_1^{(l)} \mathbf{x}_j\Big), \qquad
        \hat{\mathbf{x}} = \mathrm{LeakyReLU}(\mathbf{W}_2^{(l)} \mathbf{x}) + \mathbf{e}_{id},
        \\
        \mathbf{x}' &= \mathrm{LeakyReLU}(\mathbf{W}_3^{(l)} \mathbf{h} + \hat{\mathbf{x}})

    with the mean aggregation done by :class:`~mmssl_pyg.nn.BipartiteConv` over the
    row-normalised user-item graph (users from items, items from users). The mean weights
    differ by direction (:math:`1/|\mathcal{N}_u|` into users, :math:`1/|\mathcal{N}_i|` into
    items), so neither matrix is the other's transpose: each aggregation's backward pass
    takes its own cached transpose (``adj_ui_t``, ``adj_iu_t``).
    """

    def __init__(self, num_users: int, feat_dim: int, embedding_dim: int, latent_dim: int | None,
                 num_layers: int):
        super().__init__()
        in_dim = latent_dim or feat_dim
        self.mlp = torch.nn.Linear(feat_dim, latent_dim) if latent_dim else None
        self.preference = torch.nn.Parameter(torch.empty(num_users, in_dim))
        dims = [in_dim] + [embedding_dim] * num_layers
        self.conv_weight = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.empty(dims[l], dims[l])) for l in range(num_layers)])
        self.linear = torch.nn.ModuleList(
            [torch.nn.Linear(dims[l], embedding_dim) for l in range(num_layers)])
        self.gate = torch.nn.ModuleList(
            [torch.nn.Linear(dims[l], embedding_dim) for l in range(num_layers)])
        self.conv = BipartiteConv()
        self.reset_parameters()

    def reset_parameters(self):
        torch.nn.init.xavier_normal_(self.preference)
        for w in self.conv_weight:
            torch.nn.init.xavier_normal_(w)
        for lin in [*self.linear, *self.gate] + ([self.mlp] if self.mlp is not None else []):
            torch.nn.init.xavier_normal_(lin.weight)
            torch.nn.init.zeros_(lin.bias)

    def forward(self, features: Tensor, user_id: Tensor, item_id: Tensor, adj_ui: Tensor,
                adj_iu: Tensor, adj_ui_t: Tensor, adj_iu_t: Tensor) -> tuple[Tensor, Tensor]:
        # Users and items share every layer's weights, so they go through each dense product
        # stacked (users first), and W_1 and W_2 share their input, so x @ [W_1 | W_2^T] is one
        # product: fewer, larger kernels, the same arithmetic as one product per node type.
        # The parts are taken with split, not slicing: a slice's backward zero-fills a tensor
        # of the whole's size per slice, split's concatenates the parts' gradients (the same
        # values, about 10-15% of an MMGCN step on full TikTok).
        sizes = [user_id.size(0), item_id.size(0)]
        xi = self.mlp(features) if self.mlp is not None else features
        # unit_rows: F.normalize's values with a written-out backward (about half the
        # full-size operations of autograd's; 256-wide rows here)
        x = torch.cat([unit_rows(self.preference), unit_rows(xi)])
        ids = torch.cat([user_id, item_id])
        for w, lin, gate in zip(self.conv_weight, self.linear, self.gate):
            xw, pre = (x @ torch.cat([w, lin.weight.t()], 1)).split(
                [w.size(1), lin.weight.size(0)], 1)
            x_hat = F.leaky_relu(pre + lin.bias) + ids
            xw_u, xw_i = xw.split(sizes)
            h = F.leaky_relu(torch.cat([self.conv(xw_i, adj_ui, adj_rev=adj_ui_t),
                                        self.conv(xw_u, adj_iu, adj_rev=adj_iu_t)]))
            x = F.leaky_relu(gate(h) + x_hat)
        user, item = x.split(sizes)
        return user, item


class MMGCN(Recommender):
    r"""MMGCN from Wei et al., `"MMGCN: Multi-modal Graph Convolution Network for Personalized
    Recommendation of Micro-video" <https://arxiv.org/abs/1908.03999>`_ (ACM MM 2019).

    Every modality :math:`m` has its own graph convolution network (:class:`ModalityGCN`) over
    the user-item graph, with its own user preferences; the ID embeddings are shared and enter
    every layer. The final representations average the modalities:
    :math:`\mathbf{u} = \frac{1}{M}\sum_m \mathbf{u}^m`,
    :math:`\mathbf{i} = \frac{1}{M}\sum_m \mathbf{i}^m`, scored by an inner product and trained
    with BPR plus L2 on the batch's ID embeddings and user preferences.

    Unlike the MMRec toolkit's port (whose ID embeddings and preferences are plain tensors that
    the optimiser never updates, and which always runs three layers), both are parameters here
    and ``num_layers`` is honoured.

    Args:
        graph: the training graph; needs at least one modality (any number).
        embedding_dim: output / ID embedding size (default ``64``).
        latent_dim: size the item features are first projected to, and of the user
            preferences (default ``256``, MMRec's ``dim_latent``); ``None`` uses the raw
            feature size.
        num_layers: graph convolution layers per modality (default ``2``, MMRec's
            ``MMGCN.yaml``).
        reg_weight: L2 weight (default ``1e-4``, a value of MMRec's grid; not tuned here).
        feature_norm: feature scaling (default ``'l2'``; the layer also L2-normalises its input).
    """
    min_modalities = 1
    id_init = 'xavier_normal'

    def __init__(self, graph: RecGraph, embedding_dim: PositiveInt = 64,
                 latent_dim: Annotated[int | None, Range(1), NoneMeans('the feature size')] = 256,
                 num_layers: PositiveInt = 2, reg_weight: NonNegative = 1e-4,
                 feature_norm: Annotated[FeatureNorm, Formerly('feat_norm')] = 'l2'):
        super().__init__(graph)
        self.embedding_dim = embedding_dim
        self.num_layers = num_layers
        self.reg_weight = reg_weight
        self.modality_names = register_features(self, graph.features, feature_norm)
        self.user_id = torch.nn.Embedding(graph.num_users, embedding_dim)
        self.item_id = torch.nn.Embedding(graph.num_items, embedding_dim)
        self.gcns = torch.nn.ModuleList([
            ModalityGCN(graph.num_users, f.size(1), embedding_dim, latent_dim, num_layers)
            for f in modality_features(self)])
        self.register_adjacency(graph, 'mean')
        # the true transposes, for the backward pass (ModalityGCN's docstring says why)
        self.register_buffer('adj_ui_t', sparse_transpose(self.adj_ui), persistent=False)
        self.register_buffer('adj_iu_t', sparse_transpose(self.adj_iu), persistent=False)
        self.reset_parameters()

    def reset_parameters(self):
        torch.nn.init.xavier_normal_(self.user_id.weight)
        torch.nn.init.xavier_normal_(self.item_id.weight)
        for gcn in self.gcns:
            gcn.reset_parameters()

    def modality_embeddings(self) -> list[tuple[Tensor, Tensor]]:
        """``[(user [n_u, d], item [n_i, d]) per modality]``: one propagation per modality."""
        return [gcn(f, self.user_id.weight, self.item_id.weight, self.adj_ui, self.adj_iu,
                    self.adj_ui_t, self.adj_iu_t)
                for gcn, f in zip(self.gcns, modality_features(self))]

    def get_embedding(self) -> tuple[Tensor, Tensor]:
        per_modality = self.modality_embeddings()
        user = torch.stack([u for u, _ in per_modality]).mean(0)
        item = torch.stack([i for _, i in per_modality]).mean(0)
        return user, item

    def loss(self, batch: Batch) -> dict[str, Tensor]:
        u, i = self.get_embedding()
        ub, pb, nb = u[batch.users], i[batch.pos], i[batch.neg]
        bpr = bpr_loss((ub * pb).sum(-1), (ub * nb).sum(-1))
        prefs = [gcn.preference[batch.users] for gcn in self.gcns]
        reg = self.reg_weight * l2_reg(self.user_id(batch.users), self.item_id(batch.pos),
                                       self.item_id(batch.neg), *prefs)
        return {'loss': bpr + reg, 'bpr': bpr, 'reg': reg}

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.num_users} users, {self.num_items} items, '
                f'modalities={self.modality_names}, embedding_dim={self.embedding_dim}, '
                f'num_layers={self.num_layers})')
