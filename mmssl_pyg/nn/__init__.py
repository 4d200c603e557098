from .conv import BipartiteConv, sparse_matmul
from .topk import blockwise_topk, knn_edge_index

__all__ = ['BipartiteConv', 'sparse_matmul', 'blockwise_topk', 'knn_edge_index']
from .attention import CrossModalAttention  # noqa: E402
from .critic import LowRankRows, RelationCritic, check_critic_memory  # noqa: E402
from .generator import ModalityRelationGenerator  # noqa: E402
from .losses import cross_modal_info_nce, gradient_penalty, projected_gradient_penalty  # noqa: E402

__all__ += ['CrossModalAttention', 'LowRankRows', 'RelationCritic', 'check_critic_memory',
            'ModalityRelationGenerator', 'cross_modal_info_nce', 'gradient_penalty',
            'projected_gradient_penalty']
