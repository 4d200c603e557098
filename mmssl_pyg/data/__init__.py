"""Datasets, raw-format readers, validation and the shared :class:`RecGraph` view."""
from .build_output import BuildResult
from .builder import BuildRequest, build_dataset
from .catalog import (
    DATASETS,
    Allrecipes,
    AmazonBaby,
    AmazonSports,
    MovieLens100K,
    TikTok,
    TikTokMini,
    datasets_command,
    load_dataset,
)
from .dataset import DatasetInfo, MMSSLDataset, default_root
from .folder import available_modalities, build_hetero_data, detect_raw_format, read_mmssl_folder
from .graph import EDGE, FEAT_SUFFIX, ITEM, REV_EDGE, USER, RecGraph, modality_features
from .readers import SplitPairs, read_features, read_json_split, read_sparse_matrix
from .stats import dataset_stats, format_stats, print_stats
from .table import Table, read_table
from .validation import DatasetFormatError, DatasetNotFoundError

__all__ = [
    'MMSSLDataset', 'TikTok', 'TikTokMini', 'AmazonBaby', 'AmazonSports', 'Allrecipes',
    'MovieLens100K', 'build_dataset', 'BuildRequest', 'BuildResult', 'Table', 'read_table',
    'DATASETS', 'DatasetInfo', 'load_dataset', 'default_root', 'read_mmssl_folder',
    'build_hetero_data', 'detect_raw_format', 'available_modalities',
    'dataset_stats', 'format_stats', 'print_stats', 'datasets_command',
    'read_json_split', 'read_sparse_matrix', 'read_features', 'SplitPairs',
    'DatasetFormatError', 'DatasetNotFoundError',
    'RecGraph', 'modality_features', 'USER', 'ITEM', 'EDGE', 'REV_EDGE', 'FEAT_SUFFIX',
]
