r"""Memory budget of MMSSL's relation critic (Eq. 4).

The critic reads one user's row of ``num_items`` relation values, so its first layer holds
:math:`n_i \cdot n_i/4` weights (11.3M for TikTok's 6,710 items, 10^12 for two million items).
:func:`check_critic_memory` refuses a critic that does not fit before anything is allocated.
"""
from __future__ import annotations

import os

import torch


def critic_hidden_sizes(num_items: int) -> tuple[int, int]:
    """Hidden widths of Eq. 4: ``(num_items // 4, num_items // 8)``, at least 1."""
    return max(1, num_items // 4), max(1, num_items // 8)


def critic_memory_estimate(num_items: int, num_rows: int) -> tuple[int, int]:
    r"""``(parameters, bytes)`` a critic step needs for ``num_rows`` rows of ``num_items``.

    Parameters: the three linear layers and the two batch norms. Bytes: 16 per parameter
    (weights, gradients and Adam's two moments, float32) plus the activations of one step:
    per row about three ``num_items``-wide tensors (the gradient penalty's input gradient and
    its backward) and a dozen tensors of each hidden width.
    """
    h1, h2 = critic_hidden_sizes(num_items)
    params = num_items * h1 + h1 + h1 * h2 + h2 + h2 + 1 + 2 * (h1 + h2)
    activations = 4 * num_rows * (3 * num_items + 12 * (h1 + h2))
    return params, 16 * params + activations


def available_memory(device: torch.device | str | None = None) -> tuple[int, str]:
    """``(bytes, description)`` of the memory a critic may use on ``device``: free CUDA memory
    (``torch.cuda.mem_get_info``), else the machine's physical memory."""
    device = torch.device(device if device is not None else 'cpu')
    if device.type == 'cuda' and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(device)
        return int(free), f'free memory on {device}'
    try:
        pages, size = os.sysconf('SC_PHYS_PAGES'), os.sysconf('SC_PAGE_SIZE')
        return int(pages * size), 'physical memory of this machine'
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 1 << 62, 'unknown (no limit checked)'


def check_critic_memory(num_items: int, num_rows: int, max_bytes: int | None = None,
                        device: torch.device | str | None = None) -> int:
    """Raise a :class:`ValueError` (before any allocation) if a critic over ``num_items``
    columns and a step over ``num_rows`` rows does not fit; return the estimated bytes.
    (With MMSSL's ``critic_columns=C`` the critic reads ``C`` columns: pass ``C``.)"""
    params, need = critic_memory_estimate(num_items, num_rows)
    if max_bytes is not None:
        limit, what = int(max_bytes), 'max_critic_memory'
    else:
        limit, what = available_memory(device)
    if need > limit:
        raise ValueError(
            f'The MMSSL critic (Eq. 4) reads rows of n_items={num_items:,} values; its first '
            f'layer alone has n_items^2/4 weights, {params:,} parameters in all. With gradients, '
            f"Adam's two moments and the activations of {num_rows:,} rows a critic step needs "
            f'about {need / 2**30:,.2f} GiB ({need:,} bytes), more than the {limit / 2**30:,.2f} '
            f'GiB ({limit:,} bytes) available ({what}). Fix: let the critic read a random subset '
            f'of item columns per step (MMSSL critic_columns=4096, for example), train on a '
            f"smaller item catalogue (filter rare items), use the w/o-ASL ablation "
            f"(ablation='wo_asl', no critic) or "
            f"the graph auto-encoder variant (ablation='rp_gae'), or raise max_critic_memory if "
            f'more memory really is available.')
    return need
