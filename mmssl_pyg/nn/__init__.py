"""Layers and functions of the models, one paper equation each (see docs/EQUATIONS.md)."""
from .attention import CrossModalAttention
from .conv import BipartiteConv, sparse_matmul
from .critic import RelationCritic
from .critic_memory import check_critic_memory
from .generator import ModalityRelationGenerator
from .losses import cross_modal_info_nce, gradient_penalty, projected_gradient_penalty
from .lowrank import LowRankRows
from .topk import blockwise_topk, knn_edge_index

__all__ = ['BipartiteConv', 'sparse_matmul', 'blockwise_topk', 'knn_edge_index',
           'CrossModalAttention', 'LowRankRows', 'RelationCritic', 'check_critic_memory',
           'ModalityRelationGenerator', 'cross_modal_info_nce', 'gradient_penalty',
           'projected_gradient_penalty']
