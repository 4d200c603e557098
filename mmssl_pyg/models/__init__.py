"""Model registry: ``--model NAME`` on the command line maps to these classes."""
from .base import Batch, Recommender
from .bm3 import BM3
from .freedom import FREEDOM
from .grcn import GRCN
from .lattice import LATTICE
from .lightgcn import LightGCN
from .mf import MF
from .mmgcn import MMGCN
from .mmssl import MMSSL
from .pop import Pop
from .sgl import SGL
from .vbpr import VBPR

MODELS: dict[str, type[Recommender]] = {
    'lightgcn': LightGCN,
    'mmssl': MMSSL,
    # The same class with the paper's / released code's values (configs/mmssl-paper.yaml);
    # `mmssl` above runs this library's measured-best preset (configs/mmssl.yaml).
    'mmssl-paper': MMSSL,
    'mf': MF,
    'sgl': SGL,
    'vbpr': VBPR,
    'mmgcn': MMGCN,
    'grcn': GRCN,
    'lattice': LATTICE,
    'freedom': FREEDOM,
    'bm3': BM3,
    'pop': Pop,
}


def get_model_class(name: str) -> type[Recommender]:
    try:
        return MODELS[name.lower()]
    except KeyError:
        raise KeyError(f'unknown model {name!r}; choose one of {sorted(MODELS)}') from None


__all__ = ['Batch', 'Recommender', 'LightGCN', 'MF', 'SGL', 'VBPR', 'MMGCN', 'GRCN', 'LATTICE',
           'FREEDOM', 'BM3', 'MMSSL', 'Pop', 'MODELS', 'get_model_class']
