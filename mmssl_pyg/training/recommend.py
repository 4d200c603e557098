"""Recommendations of a trained model and the plain-text reports of ``mmssl-pyg``.

:func:`recommend` ranks the unseen items of each user; :func:`write_recommendations` writes
them as ``.csv`` / ``.parquet`` and :func:`format_recommendations` as text;
:func:`format_metrics` prints a metrics table.
"""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import torch

from ..data.graph import RecGraph
from ..utils.io import atomic_write, check_output_file
from .evaluator import DEFAULT_KS, eval_mode, exclusion_rows
from .options import METRIC_NAMES, check_cutoffs, check_option

OUTPUT_SUFFIXES = ('.csv', '.parquet')


@torch.no_grad()
def recommend(model, graph: RecGraph, users: torch.Tensor | None = None, k: int = 20,
              exclude: str = 'train', batch_size: int = 1024,
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-``k`` unseen items per user (``users`` defaults to all).

    Args:
        exclude: ``'train'`` ranks every item the user has not interacted with in training;
            ``'all'`` also drops the validation and test items.

    Returns:
        ``(users [U], items [U, k], scores [U, k])``, best first, on the CPU.
    """
    if exclude not in ('train', 'all'):
        raise ValueError(f"exclude must be 'train' or 'all', got {exclude!r}")
    k = check_option('cli', 'k', k, source='', label='-k')
    check_cutoffs([k], graph.num_items, '-k')
    if users is None:
        users = torch.arange(graph.num_users)
    users = torch.as_tensor(users, dtype=torch.long).view(-1).cpu()
    if users.numel() == 0:
        raise ValueError('no user ids given. Fix: --users 0,1,2 (comma-separated ids), or '
                         '--output FILE for every user')
    bad = users[(users < 0) | (users >= graph.num_users)]
    if bad.numel():
        raise ValueError(f'user ids {bad.tolist()[:10]} are out of range: dataset '
                         f'{graph.name!r} has users 0..{graph.num_users - 1}')
    if exclude == 'train':
        rowptr, col = exclusion_rows(graph)
    else:
        from ..data.graph import csr_rows
        ei = torch.cat([graph.train_edge_index, graph.val_edge_index.to(graph.train_edge_index),
                        graph.test_edge_index.to(graph.train_edge_index)], dim=1)
        rowptr, col = csr_rows(ei.long(), graph.num_users)
    with eval_mode(model):
        items, scores = model.recommend(users, k, rowptr, col, block_size=batch_size,
                                        return_scores=True)
    return users, items.cpu(), scores.cpu()


def write_recommendations(path: str | os.PathLike, users: torch.Tensor, items: torch.Tensor,
                          scores: torch.Tensor, force: bool = False) -> Path:
    """Write long-format ``user, rank, item, score`` rows (rank from 1) to ``.csv`` or
    ``.parquet`` (Parquet needs pyarrow), atomically: an existing file is replaced only with
    ``force`` and only by a complete new file (see :func:`check_output_path`)."""
    path = Path(path)
    suffix = check_output_path(path, force)
    k = items.size(1)
    valid = torch.isfinite(scores)  # fewer than k unseen items: the tail is excluded items
    u = users.view(-1, 1).expand(-1, k)[valid]
    rank = torch.arange(1, k + 1).view(1, -1).expand(users.numel(), -1)[valid]
    it, sc = items[valid], scores[valid]
    if suffix == '.parquet':
        import pyarrow as pa
        import pyarrow.parquet as pq
        table = pa.table({'user': u.numpy(), 'rank': rank.numpy(), 'item': it.numpy(),
                          'score': sc.float().numpy()})
        atomic_write(path, lambda f: pq.write_table(table, f))
    else:
        def write_csv(f):
            writer = csv.writer(f)
            writer.writerow(['user', 'rank', 'item', 'score'])
            writer.writerows(zip(u.tolist(), rank.tolist(), it.tolist(),
                                 (f'{s:.6g}' for s in sc.tolist())))
        atomic_write(path, write_csv, binary=False)
    return path


def check_output_path(path: str | os.PathLike, force: bool = False) -> str:
    """The suffix of a recommendation file (``.csv`` / ``.parquet``), checked before any work:
    an unknown suffix, a folder, a symbolic link, an existing file without ``force``, an
    unwritable place, or Parquet without pyarrow fail with the fix."""
    path = check_output_file(path, force, OUTPUT_SUFFIXES)
    suffix = path.suffix.lower()
    if suffix == '.parquet':
        try:
            import pyarrow  # noqa: F401
            import pyarrow.parquet  # noqa: F401
        except ImportError:
            raise ImportError(f'writing {path.name}: Parquet output needs pyarrow, which is not '
                              f'installed. Run `pip install pyarrow` (or `pip install '
                              f'mmssl-pyg[parquet]`), or write a .csv file instead.') from None
    return suffix


def format_recommendations(users: torch.Tensor, items: torch.Tensor,
                           scores: torch.Tensor) -> str:
    """Tab-separated ``user<TAB>item item ...`` lines (best first), with a header."""
    buf = io.StringIO()
    buf.write('user\titems\n')
    for u, row, s in zip(users.tolist(), items.tolist(), scores.tolist()):
        buf.write(f'{u}\t{" ".join(str(i) for i, v in zip(row, s) if v != float("-inf"))}\n')
    return buf.getvalue()


def format_metrics(rows: dict[str, dict[str, float]], ks=DEFAULT_KS) -> str:
    """A plain-text table: one row per (split, metric), one column per K."""
    ks = sorted(ks)
    header = f'{"":<16}' + ''.join(f'{"@" + str(k):>10}' for k in ks)
    lines = [header]
    for split, metrics in rows.items():
        for name in METRIC_NAMES:
            if not any(f'{name}@{k}' in metrics for k in ks):
                continue
            cells = ''.join(f'{metrics[f"{name}@{k}"]:>10.4f}' if f'{name}@{k}' in metrics
                            else f'{"-":>10}' for k in ks)
            lines.append(f'{split + " " + name:<16}{cells}')
    return '\n'.join(lines)
