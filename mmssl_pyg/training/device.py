"""The device, seeds and mixed precision of a run (shared by the trainer and the runs)."""
from __future__ import annotations

import random
import resource
import sys

import numpy as np
import torch

from .options import ConfigError


def resolve_device(device: str | torch.device = 'auto') -> torch.device:
    """``'auto'`` -> ``cuda`` when available, else ``cpu``; other values are checked."""
    if str(device) == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    device = torch.device(device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise RuntimeError(f'device {str(device)!r} was asked for but CUDA is not available '
                           f"(torch {torch.__version__}); use --device cpu or auto")
    return device


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``TrainConfig.precision`` on ``device`` (``None``: float32)."""
    if precision == 'fp32':
        return None
    if precision == 'fp16' and device.type != 'cuda':
        raise ConfigError(f'precision fp16 needs a CUDA GPU (float16 autocast and its '
                          f'GradScaler); the device is {str(device)!r}. On a CPU use '
                          f'precision=bf16 (bfloat16 autocast) or fp32.')
    if precision == 'bf16' and device.type == 'cuda' and not torch.cuda.is_bf16_supported():
        raise ConfigError(f'precision bf16: {torch.cuda.get_device_name(device)} does not '
                          f'support bfloat16; use precision=fp16 or fp32')
    return torch.bfloat16 if precision == 'bf16' else torch.float16


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory in MiB: ``torch.cuda.max_memory_allocated`` on a GPU (reset per epoch by
    the trainer), the process's peak resident set size (``ru_maxrss``, never reset) on CPU."""
    if device.type == 'cuda':
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == 'darwin' else rss / 2**10  # bytes on macOS, else KiB
