"""Model registry: ``--model NAME`` on the command line maps to these classes."""
from .base import Batch, Recommender
from .lightgcn import LightGCN

MODELS: dict[str, type[Recommender]] = {
    'lightgcn': LightGCN,
}


def get_model_class(name: str) -> type[Recommender]:
    try:
        return MODELS[name.lower()]
    except KeyError:
        raise KeyError(f'unknown model {name!r}; choose one of {sorted(MODELS)}') from None


__all__ = ['Batch', 'Recommender', 'LightGCN', 'MODELS', 'get_model_class']
