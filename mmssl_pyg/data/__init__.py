"""Datasets, raw-format readers, validation and the shared :class:`RecGraph` view."""
from .builder import BuildResult, Table, build_dataset, read_table
from .dataset import (
    DATASETS,
    Allrecipes,
    AmazonBaby,
    AmazonSports,
    DatasetInfo,
    MMSSLDataset,
    MovieLens100K,
    TikTok,
    TikTokMini,
    available_modalities,
    build_hetero_data,
    dataset_stats,
    datasets_command,
    default_root,
    detect_raw_format,
    format_stats,
    load_dataset,
    print_stats,
    read_mmssl_folder,
)
from .graph import EDGE, FEAT_SUFFIX, ITEM, REV_EDGE, USER, RecGraph, modality_features
from .readers import SplitPairs, read_features, read_json_split, read_sparse_matrix
from .validation import DatasetFormatError, DatasetNotFoundError

__all__ = [
    'MMSSLDataset', 'TikTok', 'TikTokMini', 'AmazonBaby', 'AmazonSports', 'Allrecipes',
    'MovieLens100K', 'build_dataset', 'BuildResult', 'Table', 'read_table',
    'DATASETS', 'DatasetInfo', 'load_dataset', 'default_root', 'read_mmssl_folder',
    'build_hetero_data', 'detect_raw_format', 'available_modalities',
    'dataset_stats', 'format_stats', 'print_stats', 'datasets_command',
    'read_json_split', 'read_sparse_matrix', 'read_features', 'SplitPairs',
    'DatasetFormatError', 'DatasetNotFoundError',
    'RecGraph', 'modality_features', 'USER', 'ITEM', 'EDGE', 'REV_EDGE', 'FEAT_SUFFIX',
]
