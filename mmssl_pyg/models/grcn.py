"""GRCN: graph-refined convolutional network (content-based edge weights and pruning)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.graph import RecGraph
from ..nn.edge_weighted import EdgeWeightedGraph, unit_rows
from ..nn.propagation import light_propagate
from ._common import check_positive_int, modality_features, register_features
from .base import Batch, Recommender, bpr_loss, l2_reg


class GRCN(Recommender):
    r"""GRCN from Wei et al., `"Graph-Refined Convolutional Network for Multimedia
    Recommendation with Implicit Feedback" <https://arxiv.org/abs/2111.02036>`_ (ACM MM 2020).

    **Graph refining.** For every modality :math:`m`, items get content vectors
    :math:`\mathbf{f}^m_i = \mathrm{normalize}(\mathrm{LeakyReLU}(\mathbf{W}^m \mathbf{x}^m_i))`
    and users learned preferences :math:`\mathbf{p}^m_u`, refined by ``num_routing`` rounds of
    routing over the user's items:
    :math:`\mathbf{p}^m_u \leftarrow \mathrm{normalize}(\mathbf{p}^m_u + \sum_{i \in N_u}
    \alpha^m_{ui} \mathbf{f}^m_i)`, :math:`\alpha^m_{ui} = \mathrm{softmax}_{i \in N_u}
    \langle \mathbf{p}^m_u, \mathbf{f}^m_i \rangle`. The affinity of every training edge, in
    each direction (softmax over the receiving node's neighbours), is scaled by the sending
    node's learned confidence :math:`c^m` and the modalities are max-pooled; negative weights
    prune their edge:

    .. math::
        w_{j \to n} = \mathrm{ReLU}\big(\max_m\, \alpha^m_{j \to n}\, c^m_j\big)

    **Propagation.** L2-normalised ID embeddings go through two weighted sum-aggregation
    layers on the refined graph (the weights above),
    :math:`\mathbf{e} = \mathbf{e}^{(0)} + \mathbf{e}^{(1)} + \mathbf{e}^{(2)}`; every modality
    contributes the content representation
    :math:`[\mathbf{p}^m_u + \sum_i \alpha^m_{i\to u}\mathbf{f}^m_i,\;
    \mathbf{f}^m_i + \sum_u \alpha^m_{u\to i}\mathbf{p}^m_u]`. The final vectors concatenate
    the ID part and every modality's part; trained with BPR plus L2 on the batch's ID
    embeddings and user preferences.

    Every edge-level step (affinities, routing, both aggregations) runs as a fused sparse
    kernel over the training edges (:class:`~mmssl_pyg.nn.edge_weighted.EdgeWeightedGraph`),
    not as per-edge messages; every softmax over a node's edges is
    :meth:`~mmssl_pyg.nn.edge_weighted.EdgeWeightedGraph.softmax` and every normalisation
    :func:`~mmssl_pyg.nn.edge_weighted.unit_rows` (PyG's and ``F.normalize``'s values, shorter
    backward passes).

    The routing aggregates items into users as the paper describes (the MMRec toolkit's port
    sends the messages the other way, which leaves its preferences unrouted).

    Args:
        graph: the training graph; needs at least one modality (any number).
        embedding_dim: ID embedding size (default ``64``, MMRec's ``embedding_size``).
        latent_dim: size of the content vectors and preferences (default ``64``, MMRec's
            ``latent_embedding``).
        num_routing: routing rounds (default ``3``, MMRec's ``n_layers``).
        num_layers: propagation layers of the ID embeddings (default ``2``, as in MMRec).
        reg_weight: L2 weight (default ``1e-4``, a value of MMRec's grid; not tuned here).
        feat_norm: feature scaling (default ``'l2'``).
    """
    min_modalities = 1
    id_init = 'xavier_normal'

    def __init__(self, graph: RecGraph, embedding_dim: int = 64, latent_dim: int = 64,
                 num_routing: int = 3, num_layers: int = 2, reg_weight: float = 1e-4,
                 feat_norm: str = 'l2'):
        super().__init__(graph)
        self.embedding_dim = embedding_dim
        self.latent_dim = latent_dim
        self.num_routing = num_routing
        self.num_layers = check_positive_int('num_layers', num_layers)
        self.reg_weight = reg_weight
        self.modality_names = register_features(self, graph.features, feat_norm)
        num_mod = len(self.modality_names)
        self.user_id = torch.nn.Embedding(graph.num_users, embedding_dim)
        self.item_id = torch.nn.Embedding(graph.num_items, embedding_dim)
        self.preference = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.empty(graph.num_users, latent_dim)) for _ in range(num_mod)])
        self.content = torch.nn.ModuleList(
            [torch.nn.Linear(f.size(1), latent_dim) for f in modality_features(self)])
        #: Per-node, per-modality confidence :math:`c^m` (users first, then items).
        self.confidence = torch.nn.Parameter(torch.empty(graph.num_users + graph.num_items,
                                                         num_mod))
        #: The training edges in both CSR orders; every edge-level step (affinities, routing,
        #: propagation over the refined weights) runs on it as a fused sparse kernel.
        self.edges = EdgeWeightedGraph(graph.train_edge_index, graph.num_users, graph.num_items)
        #: Every edge's item as a row of :attr:`confidence` (the training graph is fixed).
        self.register_buffer('item_node', self.edges.item + graph.num_users, persistent=False)
        self.reset_parameters()

    def reset_parameters(self):
        torch.nn.init.xavier_normal_(self.user_id.weight)
        torch.nn.init.xavier_normal_(self.item_id.weight)
        torch.nn.init.xavier_normal_(self.confidence)
        for p in self.preference:
            torch.nn.init.xavier_normal_(p)
        for lin in self.content:
            torch.nn.init.xavier_normal_(lin.weight)
            torch.nn.init.zeros_(lin.bias)

    def _modality(self, m: int, features: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Content representations and edge affinities ``(user, item, a_iu, a_ui)`` of one
        modality; ``a_iu`` weights item->user messages, ``a_ui`` user->item messages."""
        g = self.edges
        f = unit_rows(F.leaky_relu(self.content[m](features)))
        p = unit_rows(self.preference[m])
        for _ in range(self.num_routing):
            a = g.softmax(g.edge_dot(p, f), over='users')
            p = unit_rows(p + g.to_users(a, f))
        score = g.edge_dot(p, f)
        a_iu = g.softmax(score, over='users')
        a_ui = g.softmax(score, over='items')
        user = p + g.to_users(a_iu, f)
        item = f + g.to_items(a_ui, p)
        return user, item, a_iu, a_ui

    def _forward(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(user, item, w_iu, w_ui)``: final vectors and the refined edge weights."""
        users, items, w_iu, w_ui = self._parts()
        return torch.cat(users, 1), torch.cat(items, 1), w_iu, w_ui

    def _parts(self) -> tuple[list[Tensor], list[Tensor], Tensor, Tensor]:
        """``(user parts, item parts, w_iu, w_ui)``: the ID part and every modality's part of
        the final vectors (:meth:`_forward` concatenates them) and the refined edge
        weights."""
        g = self.edges
        users, items, a_iu, a_ui = [], [], [], []
        for m, features in enumerate(modality_features(self)):
            cu, ci, au, ai = self._modality(m, features)
            users.append(cu)
            items.append(ci)
            a_iu.append(au)
            a_ui.append(ai)
        w_iu, w_ui = self._refined_weights(torch.stack(a_iu, 1), torch.stack(a_ui, 1))
        out_u, out_i = light_propagate(  # layer sum over the refined edge weights
            unit_rows(self.user_id.weight), unit_rows(self.item_id.weight),
            self.num_layers, lambda x: g.to_users(w_iu, x), lambda x: g.to_items(w_ui, x),
            reduce='sum')
        return [out_u, *users], [out_i, *items], w_iu, w_ui

    def _refined_weights(self, a_iu: Tensor, a_ui: Tensor) -> tuple[Tensor, Tensor]:
        r"""The refined weights ``(w_iu [E], w_ui [E])`` from every modality's affinities
        ``[E, M]``: :math:`w_{j \to n} = \mathrm{ReLU}(\max_m \alpha^m_{j \to n} c^m_j)`, with
        the sending node's confidence (the item's for ``a_iu``, the user's for ``a_ui``)."""
        conf = self.confidence
        w_iu = a_iu * conf.index_select(0, self.item_node)
        w_ui = a_ui * conf.index_select(0, self.edges.user)
        return torch.relu(w_iu.max(1).values), torch.relu(w_ui.max(1).values)

    def refined_edge_weight(self) -> tuple[Tensor, Tensor]:
        """Refined weights of the training edges ``(item->user [E], user->item [E])``, in the
        order of ``graph.train_edge_index``; zero means pruned."""
        _, _, w_iu, w_ui = self._parts()
        return w_iu, w_ui

    def get_embedding(self) -> tuple[Tensor, Tensor]:
        u, i, _, _ = self._forward()
        return u, i

    def loss(self, batch: Batch) -> dict[str, Tensor]:
        users, items, _, _ = self._parts()
        # the batch's rows of the concatenated vectors, without concatenating whole tables
        ub, pb, nb = (torch.cat([x.index_select(0, index) for x in parts], 1)
                      for parts, index in [(users, batch.users), (items, batch.pos),
                                           (items, batch.neg)])
        bpr = bpr_loss((ub * pb).sum(-1), (ub * nb).sum(-1))
        prefs = [p.index_select(0, batch.users) for p in self.preference]
        reg = self.reg_weight * l2_reg(self.user_id(batch.users), self.item_id(batch.pos),
                                       self.item_id(batch.neg), *prefs)
        return {'loss': bpr + reg, 'bpr': bpr, 'reg': reg}

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.num_users} users, {self.num_items} items, '
                f'modalities={self.modality_names}, embedding_dim={self.embedding_dim}, '
                f'latent_dim={self.latent_dim})')
