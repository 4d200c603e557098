from .conv import BipartiteConv, sparse_matmul
from .topk import blockwise_topk, knn_edge_index

__all__ = ['BipartiteConv', 'sparse_matmul', 'blockwise_topk', 'knn_edge_index']
