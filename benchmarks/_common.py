"""The one runner every benchmark shares, plus stamps, unit storage, per-user metrics and output.

A *unit* is one (model, dataset, seed, configuration) training run. :func:`run_unit` trains it
with the library's :class:`~mmssl_pyg.training.Trainer` (options resolved with the library's
preset loader, so a unit is exactly what ``mmssl-pyg train`` would run with the same
overrides), and returns a JSON-able record: resolved options, the per-epoch history, the
validation metrics of the selected epoch and the test metrics of that epoch (evaluated once by
the trainer), timings, memory, per-user / per-item group metrics of the test split, and a stamp.

Units are identified by a hash of everything that determines their result (model, dataset,
seed, resolved model and trainer options, device type, synthetic-graph shape); the benchmark
name and label are not part of it, so a unit trained for one benchmark (say the default MMSSL
run of ``accuracy``) is reused by any other benchmark that needs the identical run
(``ablation``'s full model, ``sparsity``, ``convergence``, ``sensitivity``'s default point).
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import math
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from mmssl_pyg.models import MODELS
from mmssl_pyg.training.options import neutral_values, stored_model_kwargs

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / 'benchmarks' / 'results'
WANDB_PROJECT = 'mmssl-pyg-benchmarks'
K_GROUPS = 20  # cut-off of the sparsity benchmark's per-user / per-item metrics


# ---------------------------------------------------------------------------------------------
# stamps


def _git(*args: str) -> str | None:
    """``git`` output, or ``None`` when git fails (not a checkout, no git)."""
    try:
        proc = subprocess.run(['git', *args], cwd=REPO, capture_output=True, text=True,
                              timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def cpu_model() -> str:
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: str | None = None) -> str:
    """``'<CPU model>, N cores'`` plus the GPU name when ``device`` is a CUDA device."""
    text = f'{cpu_model()}, {os.cpu_count()} cores'
    if device is not None and str(device).startswith('cuda') and torch.cuda.is_available():
        text = f'{torch.cuda.get_device_name(torch.device(device))} (GPU); host {text}'
    return text


def command_line() -> str:
    """This process's command as typed: ``python -m benchmarks.<name> ...`` for a module."""
    spec = getattr(sys.modules.get('__main__'), '__spec__', None)
    if spec is not None and spec.name:
        return 'python -m ' + shlex.join([spec.name, *sys.argv[1:]])
    return 'python ' + shlex.join(sys.argv)


def stamp(device: str | None = None, command: str | None = None) -> dict[str, Any]:
    """Provenance of an output: command, git commit and dirty flag, machine, versions, date."""
    import torch_geometric
    if device is not None and str(device) == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    commit = _git('rev-parse', 'HEAD') or 'unknown (not a git checkout)'
    status = _git('status', '--porcelain')
    return {
        'command': command or command_line(),
        'commit': commit,
        'dirty': bool(status) or status is None,  # unknown counts as dirty
        'dirty_paths': len(status.splitlines()) if status else 0,
        'machine': machine(device),
        'device': str(device) if device is not None else 'cpu',
        'torch': torch.__version__,
        'torch_geometric': torch_geometric.__version__,
        'python': platform.python_version(),
        'date': _dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M:%S UTC'),
    }


def stamp_lines(st: dict[str, Any]) -> list[str]:
    if not st.get('dirty'):
        dirty = ' (clean)'
    elif st.get('dirty_paths'):
        dirty = f' (dirty: {st["dirty_paths"]} changed/untracked paths)'
    else:
        dirty = ' (dirty state unknown)'
    return [f'command: `{st["command"]}`',
            f'git commit: {st["commit"]}{dirty}',
            f'machine: {st["machine"]}; device: {st["device"]}',
            f'torch {st["torch"]}, torch_geometric {st["torch_geometric"]}, '
            f'python {st["python"]}',
            f'date: {st["date"]}']


def unit_provenance(units: Sequence[dict]) -> list[str]:
    """One line each for the commits, machines and dates the units were produced with."""
    if not units:
        return []
    commits = sorted({f'{u["stamp"]["commit"][:10]}{"+dirty" if u["stamp"]["dirty"] else ""}'
                      for u in units})
    machines = sorted({f'{u["stamp"]["machine"]} [{u["stamp"]["device"]}]' for u in units})
    dates = sorted(u['stamp']['date'] for u in units)
    return [f'units produced at commit(s): {", ".join(commits)}',
            f'units produced on: {"; ".join(machines)}',
            f'units dated {dates[0]} .. {dates[-1]}']


# ---------------------------------------------------------------------------------------------
# units


@dataclasses.dataclass
class Unit:
    """One planned run. ``model_options`` / ``train_options`` override the model's preset."""
    benchmark: str
    model: str
    dataset: str
    seed: int = 0
    label: str = 'default'
    model_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    train_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    kind: str = 'train'              # 'train' or 'timing' (synthetic graph, no accuracy)
    synthetic: dict[str, Any] | None = None
    isolate: bool = False            # run in a fresh process (clean peak-memory figures)
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: Paired seeds: redraw the ID embeddings from the seed alone after building the model
    #: (``mmssl_pyg.training.seeding.pair_id_embeddings``), so that every model with tables of
    #: the same shape and initialisation rule starts from the same ones.
    paired_init: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Unit:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def unit_request(unit: Unit, device: str, progress: bool = False):
    """The :class:`~mmssl_pyg.training.run.RunRequest` of a unit: its model and dataset, its
    options as ``model.`` / ``train.`` overrides of the preset, its seed and the device."""
    from mmssl_pyg.training.run import RunRequest
    overrides = [(f'model.{k}', v) for k, v in unit.model_options.items()]
    overrides += [(f'train.{k}', v) for k, v in unit.train_options.items()]
    return RunRequest(model=unit.model, dataset=unit.dataset, overrides=overrides,
                      seed=unit.seed, device=device, progress=progress)


def preset_block(unit: Unit) -> str:
    """The preset's dataset block a unit uses (``default`` for a synthetic timing graph)."""
    return unit.dataset if unit.kind == 'train' else 'default'


def resolve(unit: Unit, device: str, progress: bool = False):
    """``RunOptions`` of the unit: preset <- unit overrides <- seed/device, with the model
    options sized by the mini-batch set as a run sets them."""
    from mmssl_pyg.training.run import batch_sized_kwargs, resolve_request
    cls, options = resolve_request(unit_request(unit, device, progress),
                                   preset_dataset=preset_block(unit))
    options.model_kwargs = batch_sized_kwargs(cls, options)  # as train_run does
    return options


#: Model options added after units were stored, with the value that reproduces the code before
#: them: left out of a unit's key at that value (like ``paired_init``), so that the earlier
#: units keep their hashes and are found, resumed and grouped as before. Derived from the
#: models' declarations (``Neutral(...)`` in a constructor's signature), as is the former name
#: a renamed option keeps in the key (``stored_model_kwargs``).
LATER_OPTIONS = neutral_values(MODELS.values())


def unit_key(unit: Unit, options, device: str) -> dict[str, Any]:
    from mmssl_pyg.models import get_model_class
    from mmssl_pyg.training.options import NON_RESULT_TRAIN_KEYS
    from mmssl_pyg.training.run import full_model_kwargs
    model_cls = get_model_class(unit.model)
    train = {k: v for k, v in options.train.to_dict().items() if k not in NON_RESULT_TRAIN_KEYS}
    key = {'model': unit.model, 'dataset': unit.dataset, 'seed': unit.seed,
           'kind': unit.kind, 'synthetic': unit.synthetic,
           'device_type': _device_type(device),
           'model_kwargs': stored_model_kwargs(model_cls, full_model_kwargs(
               model_cls, options.model_kwargs)),
           'train': train}
    if unit.paired_init:  # only when set, so that units without it keep their hashes
        key['paired_init'] = True
    return _plain(key)


def key_hash(key: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _device_type(device: str) -> str:
    from mmssl_pyg.training import resolve_device
    return resolve_device(device).type


def unit_filename(unit: Unit, digest: str) -> str:
    label = re.sub(r'[^A-Za-z0-9_.=-]+', '_', unit.label)[:60]
    return f'{unit.model}__{unit.dataset}__{label}__s{unit.seed}__{digest}.json'


def units_dir(out: Path, benchmark: str) -> Path:
    return Path(out) / benchmark / 'units'


def load_units(out: Path, benchmark: str) -> list[dict]:
    folder = units_dir(out, benchmark)
    return [json.loads(p.read_text()) for p in sorted(folder.glob('*.json'))] \
        if folder.is_dir() else []


def find_existing(out: Path, digest: str) -> Path | None:
    """A finished unit with this hash under any benchmark of ``out``."""
    hits = sorted(Path(out).glob(f'*/units/*__{digest}.json'))
    return hits[0] if hits else None


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'.{path.name}.tmp')
    tmp.write_text(json.dumps(_plain(data), indent=1, default=str))
    os.replace(tmp, path)


def _plain(x):
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, torch.Tensor):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


# ---------------------------------------------------------------------------------------------
# data


_GRAPHS: dict[str, Any] = {}


def load_graph(dataset: str):
    """The dataset's :class:`RecGraph` (cached for the process)."""
    if dataset not in _GRAPHS:
        from mmssl_pyg.training.run import load_graph as _load
        _GRAPHS[dataset] = _load(dataset)
    return _GRAPHS[dataset]


def synthetic_graph(num_users: int, num_items: int, dims: Sequence[int], degree: float = 6.4,
                    heldout_users: int = 1000, seed: int = 0):
    """A random bipartite graph with random Gaussian features: FOR TIMING ONLY.

    Each user gets ``round(degree)`` distinct-ish uniformly drawn items (about TikTok's and
    Amazon-Sports' mean training degree, 6.4 and 6.1); ``heldout_users`` users get one
    validation and one test item so that the trainer's evaluation path runs.
    """
    from mmssl_pyg.data.graph import RecGraph
    g = torch.Generator().manual_seed(seed)
    deg = max(1, round(degree))
    users = torch.arange(num_users).repeat_interleave(deg)
    items = torch.randint(num_items, (users.numel(),), generator=g)
    train = torch.unique(torch.stack([users, items]), dim=1)
    h = min(heldout_users, num_users)
    pick = torch.randperm(num_users, generator=g)[:h]
    val = torch.stack([pick, torch.randint(num_items, (h,), generator=g)])
    test = torch.stack([pick, torch.randint(num_items, (h,), generator=g)])
    names = ['image', 'text', 'audio'] + [f'm{i}' for i in range(3, len(dims))]
    feats = {names[i]: torch.randn(num_items, d, generator=g) for i, d in enumerate(dims)}
    return RecGraph(num_users, num_items, train, val, test, feats,
                    name=f'synthetic-u{num_users}-i{num_items}')


def synthetic_name(num_users: int, num_items: int, dims: Sequence[int]) -> str:
    return f'synthetic-u{num_users}-i{num_items}-d{"x".join(map(str, dims))}'


# ---------------------------------------------------------------------------------------------
# per-user / per-item metrics (the evaluator reports means only)


def per_user_metrics(user_emb, item_emb, graph, split='test', k: int = K_GROUPS,
                     exclude_val_at_test=False, batch_size=1024):
    """Per-user metrics for the group tables: the library's
    :func:`mmssl_pyg.training.evaluator.per_user_metrics` at ``k = K_GROUPS``."""
    from mmssl_pyg.training.evaluator import per_user_metrics as library_per_user
    return library_per_user(user_emb, item_emb, graph, split, k, exclude_val_at_test,
                            batch_size)


def quantile_edges(values: np.ndarray, n_groups: int) -> list[int]:
    """Integer edges ``e_0 < e_1 < ...`` of about equally populated half-open groups
    ``[e_j, e_{j+1})``; ties can merge groups, so there may be fewer than ``n_groups``."""
    v = np.sort(np.asarray(values, dtype=np.int64))
    if v.size == 0:
        return [0, 1]
    cuts = [int(v[int(len(v) * j / n_groups)]) for j in range(1, n_groups)]
    return sorted({int(v[0]), *cuts, int(v[-1]) + 1})


def group_metrics(pu: dict[str, torch.Tensor], graph, n_groups: int = 5) -> dict[str, Any]:
    """User groups by training-interaction count and item groups by training popularity."""
    user_deg = torch.bincount(graph.train_edge_index[0].cpu().long(),
                              minlength=graph.num_users).numpy()
    item_deg = torch.bincount(graph.train_edge_index[1].cpu().long(),
                              minlength=graph.num_items).numpy()
    users = pu['users'].numpy()
    udeg = user_deg[users]
    out: dict[str, Any] = {'k': K_GROUPS, 'user_groups': [], 'item_groups': []}
    edges = quantile_edges(udeg, n_groups)
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (udeg >= lo) & (udeg < hi)
        out['user_groups'].append({
            'lo': lo, 'hi': hi, 'users': int(m.sum()),
            f'ndcg@{K_GROUPS}': float(pu['ndcg'].numpy()[m].mean()) if m.any() else None,
            f'recall@{K_GROUPS}': float(pu['recall'].numpy()[m].mean()) if m.any() else None})
    held = pu['item_heldout'].numpy()
    hits = pu['item_hits'].numpy()
    items = np.nonzero(held > 0)[0]
    ideg = item_deg[items]
    edges = quantile_edges(ideg, n_groups)
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = items[(ideg >= lo) & (ideg < hi)]
        n_pairs = int(held[sel].sum())
        out['item_groups'].append({
            'lo': lo, 'hi': hi, 'items': int(sel.size), 'pairs': n_pairs,
            f'recall@{K_GROUPS}': float(hits[sel].sum() / n_pairs) if n_pairs else None})
    return out


# ---------------------------------------------------------------------------------------------
# the runner


def _rss_mb(field: str = 'VmRSS') -> float:
    """Current (``VmRSS``) or peak (``VmHWM``) resident set of this process in MiB (Linux).

    ``VmHWM`` belongs to the process image, so unlike ``ru_maxrss`` it does not inherit the
    parent's peak across fork + exec: an isolated unit reports its own peak.
    """
    try:
        for line in Path('/proc/self/status').read_text().splitlines():
            if line.startswith(f'{field}:'):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float('nan')


def run_unit(unit: Unit, out: Path, device: str = 'auto', wandb: str = 'offline',
             max_minutes: float | None = None, progress: bool = False,
             command: str | None = None) -> dict[str, Any]:
    """Train one unit and return its record (see the module docstring)."""
    from mmssl_pyg.training import resolve_device
    options = resolve(unit, device, progress)
    key = unit_key(unit, options, device)
    dev = resolve_device(device)
    if dev.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(dev)
    record: dict[str, Any] = {
        'spec': unit.to_dict(), 'key': key, 'hash': key_hash(key),
        'stamp': stamp(str(dev), command), 'status': 'ok', 'max_minutes': max_minutes,
        'model_kwargs': key['model_kwargs'], 'train': options.train.to_dict()}
    run = _assemble_unit(unit, device, progress, record)
    if run is None:
        return record  # skipped: recorded, not fatal
    inner = _unit_tracker(unit, run, out, wandb, record)
    fit, tracker, extra = _fit_unit(unit, run, out, inner, max_minutes, record)
    record.update(_fit_record(fit, tracker, dev), **extra)
    return _plain(record)


def _assemble_unit(unit: Unit, device: str, progress: bool, record: dict[str, Any]):
    """The unit's run (:func:`~mmssl_pyg.training.run.prepare_run` on its graph: the bundled
    dataset, or a synthetic one for a timing unit), with the graph, load time and memory
    before the model in ``record``; ``None`` when a timing unit's model cannot be built (a
    critic that cannot fit: recorded as skipped)."""
    from mmssl_pyg.training.run import prepare_run
    t_load = time.perf_counter()
    if unit.kind == 'timing':
        s = unit.synthetic
        graph = synthetic_graph(s['num_users'], s['num_items'], s['dims'],
                                s.get('degree', 6.4), seed=unit.seed)
    else:
        graph = load_graph(unit.dataset)
    load_seconds = time.perf_counter() - t_load
    built_from = []

    def before_model(options, graph) -> None:
        built_from.append(graph)
        record.update({
            'graph': {'users': graph.num_users, 'items': graph.num_items,
                      'train_edges': graph.num_train,
                      'modalities': {m: int(f.size(1)) for m, f in graph.features.items()}},
            'load_seconds': load_seconds, 'rss_before_model_mb': _rss_mb()})
        if unit.kind == 'timing' and options.model_kwargs.get('ablation') not in NO_CRITIC:
            from mmssl_pyg.nn.critic_memory import critic_memory_estimate
            rows = len(graph.features) * options.train.batch_size
            params, need = critic_memory_estimate(graph.num_items, rows)
            record['critic_estimate'] = {'parameters': params, 'bytes': need}

    try:
        run = prepare_run(unit_request(unit, device, progress), data=(graph, None),
                          preset_dataset=preset_block(unit), after_data=before_model)
    except ValueError as err:  # the model's own checks, e.g. a critic that cannot fit
        if unit.kind != 'timing' or not built_from:
            raise
        record.update(status='skipped', reason=str(err))
        return None
    if unit.paired_init:
        from mmssl_pyg.training.seeding import pair_id_embeddings
        record['paired_init'] = pair_id_embeddings(run.model, unit.seed)  # roles redrawn
    record['parameters'] = sum(p.numel() for p in run.model.parameters())
    return run


#: Ablations without the critic (no critic memory estimate for their timing units).
NO_CRITIC = ('wo_asl', 'rp_gae')


def _unit_tracker(unit: Unit, run, out: Path, wandb: str, record: dict[str, Any]):
    """The unit's wandb run (grouped by benchmark), its id in ``record``."""
    run_name = f'{unit.benchmark}-{unit.model}-{unit.dataset}-{unit.label}-s{unit.seed}'
    inner = run.start_tracker(
        wandb, dir=Path(out) / unit.benchmark, name=run_name, group=unit.benchmark,
        project=WANDB_PROJECT, job_type=unit.kind,
        config={'unit': unit.to_dict(), 'hash': record['hash']}) \
        if wandb != 'disabled' else run.start_tracker('disabled')
    record['wandb'] = {'mode': wandb, 'run_id': getattr(inner, 'run_id', None),
                       'group': unit.benchmark}
    return inner


def _fit_unit(unit: Unit, run, out: Path, inner, max_minutes: float | None,
              record: dict[str, Any]):
    """Fit the unit with per-epoch checkpoints (a unit killed mid-way continues from its last
    epoch and ends as if uninterrupted; they are removed once the record is complete);
    returns ``(fit, tracker, per-user extras)``."""
    from mmssl_pyg.training import Trainer
    from mmssl_pyg.training.tracking import BudgetTracker
    tracker = BudgetTracker(inner, None if not max_minutes else 60.0 * max_minutes)
    t0 = time.perf_counter()
    ckpt_dir = Path(out) / unit.benchmark / 'checkpoints' / record['hash']
    try:
        trainer = Trainer(run.model, run.graph, run.options.train, tracker=tracker,
                          checkpoint_dir=ckpt_dir,
                          meta={'model': unit.model, 'dataset': unit.dataset,
                                'benchmark': unit.benchmark, 'label': unit.label})
        tracker.trainer = trainer
        fit = trainer.fit(resume=True)
        record['resumed_from_epoch'] = fit.resumed_from_epoch
        record['fit_seconds'] = time.perf_counter() - t0
        extra = _per_user_extra(trainer, fit, run, inner) if unit.kind == 'train' else {}
    finally:
        tracker.finish()
    shutil.rmtree(ckpt_dir, ignore_errors=True)  # the record is what is kept
    return fit, tracker, extra


def _per_user_extra(trainer, fit, run, inner) -> dict[str, Any]:
    """Per-user test metrics of the selected epoch (the model holds its weights again): the
    group tables, the check against the evaluator's mean, and the per-user values for the
    paired user-level tests (PROTOCOL.md Sec. 6; users with held-out items, in id order)."""
    train = run.options.train
    t1 = time.perf_counter()
    trainer.model.eval()
    user_emb, item_emb = trainer.model.get_embedding()
    pu = per_user_metrics(user_emb, item_emb, trainer.graph, 'test',
                          exclude_val_at_test=train.exclude_val_at_test,
                          batch_size=train.eval_batch_size)
    extra: dict[str, Any] = {'groups': group_metrics(pu, run.graph)}
    mean_ndcg = float(pu['ndcg'].mean()) if pu['ndcg'].numel() else 0.0
    extra['per_user_check'] = {
        f'mean_ndcg@{K_GROUPS}': mean_ndcg,
        f'evaluator_ndcg@{K_GROUPS}': fit.test.get(f'ndcg@{K_GROUPS}'),
        'abs_diff': abs(mean_ndcg - fit.test.get(f'ndcg@{K_GROUPS}', mean_ndcg))}
    extra['per_user'] = {
        'k': K_GROUPS, 'users': pu['users'].tolist(),
        f'recall@{K_GROUPS}': [round(float(v), 6) for v in pu['recall']],
        f'ndcg@{K_GROUPS}': [round(float(v), 6) for v in pu['ndcg']]}
    extra['per_user_seconds'] = time.perf_counter() - t1
    inner.summary({f'test/group_ndcg@{K_GROUPS}/[{g["lo"]},{g["hi"]})': g[f'ndcg@{K_GROUPS}']
                   for g in extra['groups']['user_groups']})
    return extra


def _fit_record(fit, tracker, dev: torch.device) -> dict[str, Any]:
    """The record's training part: selected epoch, metrics, history, times and memory."""
    hist = fit.history
    return {
        'best_epoch': fit.best_epoch, 'epochs_run': len(hist),
        'stopped_early': bool(fit.stopped_early and tracker.cut_at is None),
        'budget_cut_at_epoch': tracker.cut_at,
        'val': fit.val, 'test': fit.test, 'history': hist,
        'epoch_seconds': [h.get('epoch_seconds') for h in hist],
        'eval_seconds': [h.get('eval_seconds') for h in hist if 'eval_seconds' in h],
        'peak_memory_mb': _peak_memory(dev, hist),
        'peak_memory_kind': 'torch.cuda.max_memory_allocated' if dev.type == 'cuda'
        else 'process peak RSS (VmHWM)',
        'trainer_peak_memory_mb': max((h.get('peak_memory_mb', 0.0) for h in hist),
                                      default=None),
    }


def _peak_memory(dev: torch.device, hist: list[dict]) -> float | None:
    if dev.type == 'cuda':  # the trainer resets the CUDA peak every epoch: take the max
        return max((h.get('peak_memory_mb', 0.0) for h in hist), default=None)
    peak = _rss_mb('VmHWM')
    if math.isfinite(peak):
        return peak
    return max((h.get('peak_memory_mb', 0.0) for h in hist), default=None)


# ---------------------------------------------------------------------------------------------
# execution of a plan: skip, reuse, run (in-process or isolated), record


def execute(units: Sequence[Unit], args, benchmark: str) -> tuple[list[dict], list[str]]:
    """Run every unit that has no result yet; return ``(plan rows, failures)``.

    Writes ``<out>/<benchmark>/plan.json`` (what was asked) so that ``report`` can state what
    is missing from a partial run.
    """
    out = Path(args.out)
    device = args.device
    planned, seen = [], set()
    for unit in units:  # resolve and deduplicate first: identical runs share one unit
        options = resolve(unit, device)
        digest = key_hash(unit_key(unit, options, device))
        if digest in seen:
            continue
        seen.add(digest)
        planned.append((unit, digest))
    plan_rows = [{'hash': d, 'file': unit_filename(u, d), **u.to_dict()} for u, d in planned]
    write_json(Path(out) / benchmark / 'plan.json',
               {'benchmark': benchmark, 'stamp': stamp(device), 'units': plan_rows,
                'quick': bool(getattr(args, 'quick', False))})
    failures = []
    t_start = time.perf_counter()
    for i, (unit, digest) in enumerate(planned, 1):
        path = units_dir(out, benchmark) / unit_filename(unit, digest)
        head = (f'[{benchmark} {i}/{len(planned)}] {unit.model} on {unit.dataset}, '
                f'{unit.label}, seed {unit.seed}')
        if not args.force:
            if path.is_file() and _usable(json.loads(path.read_text()), args.max_minutes):
                print(f'{head}: done already ({path.name})', flush=True)
                continue
            src = None if args.no_reuse else find_existing(out, digest)
            if src is not None and src != path:
                rec = json.loads(src.read_text())
                if _usable(rec, args.max_minutes):
                    rec['reused_from'] = str(src.relative_to(out))
                    rec['spec'] = unit.to_dict()  # this benchmark's label and meta
                    write_json(path, rec)
                    print(f'{head}: reused {rec["reused_from"]}', flush=True)
                    continue
        print(f'{head}: running ...', flush=True)
        t0 = time.perf_counter()
        try:
            if unit.isolate:
                rec = _run_isolated(unit, args)
            else:
                rec = run_unit(unit, out, device, args.wandb, args.max_minutes, args.progress)
        except Exception as err:  # noqa: BLE001 - recorded, the plan goes on
            msg = f'{type(err).__name__}: {err}'
            failures.append(f'{head}: {msg}')
            write_json(units_dir(out, benchmark).parent / 'failed' / path.name,
                       {'spec': unit.to_dict(), 'hash': digest, 'error': msg,
                        'stamp': stamp(device)})
            print(f'{head}: FAILED ({msg[:300]})', flush=True)
            continue
        write_json(path, rec)
        elapsed = time.perf_counter() - t0
        total = time.perf_counter() - t_start
        print(f'{head}: {_summary(rec)} in {elapsed:.1f}s (benchmark so far {total:.0f}s)',
              flush=True)
    return plan_rows, failures


def _usable(rec: dict, max_minutes: float | None) -> bool:
    """A stored unit counts as done unless it was cut by a smaller time budget."""
    if rec.get('budget_cut_at_epoch') is None:
        return True
    return bool(max_minutes) and max_minutes <= (rec.get('max_minutes') or 0)


def _summary(rec: dict) -> str:
    if rec.get('status') != 'ok':
        return f'{rec.get("status")}: {rec.get("reason", "")[:200]}'
    if rec['spec']['kind'] == 'timing':
        return f'{_mean(rec["epoch_seconds"]):.2f}s/epoch'
    cut = f', budget cut at epoch {rec["budget_cut_at_epoch"]}' \
        if rec.get('budget_cut_at_epoch') else ''
    return (f'best epoch {rec["best_epoch"]}/{rec["epochs_run"]}, val R@20 '
            f'{rec["val"].get("recall@20", float("nan")):.4f}, test R@20 '
            f'{rec["test"].get("recall@20", float("nan")):.4f}{cut}')


def run_attached(cmd: list[str], **popen_kwargs) -> int:
    """Run ``cmd`` and return its exit code, passing a SIGTERM or SIGHUP sent to this process
    on to the child (which passes it on the same way when it runs its own children through
    this function) and then exiting with ``128 + signal``: stopping a benchmark with ``kill`` or
    ``pkill`` stops every process it started, instead of leaving them to finish their work (a
    terminal's Ctrl-C already reaches the whole process group)."""
    import signal
    proc = subprocess.Popen(cmd, **popen_kwargs)
    caught: list[int] = []

    def forward(signum, frame):
        caught.append(signum)
        proc.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        code = proc.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if caught:
        raise SystemExit(128 + caught[0])
    return code


def _run_isolated(unit: Unit, args) -> dict:
    """Run the unit in a fresh interpreter (``python -m benchmarks.run _unit``, from the
    repository root) so that the peak RSS is its own."""
    with tempfile.TemporaryDirectory() as tmp:
        spec, result = Path(tmp) / 'unit.json', Path(tmp) / 'result.json'
        spec.write_text(json.dumps(unit.to_dict()))
        cmd = [sys.executable, '-m', 'benchmarks.run', '_unit', '--spec', str(spec),
               '--result', str(result), '--out', str(Path(args.out).resolve()),
               '--device', args.device, '--wandb', args.wandb,
               '--stamp-command', command_line()]
        if args.max_minutes:
            cmd += ['--max-minutes', str(args.max_minutes)]
        if args.progress:
            cmd.append('--progress')
        if getattr(args, 'threads', None):
            cmd += ['--threads', str(args.threads)]
        code = run_attached(cmd, cwd=REPO)
        if code != 0 or not result.is_file():
            raise RuntimeError(f'isolated unit process exited with {code}')
        return json.loads(result.read_text())


# ---------------------------------------------------------------------------------------------
# statistics and output


def _mean(xs: Iterable[float | None]) -> float:
    v = [x for x in xs if x is not None]
    return float(np.mean(v)) if v else float('nan')


class MeanStd(NamedTuple):
    """A table cell: Markdown shows ``mean ± std``, the CSV gets two numeric columns."""
    mean: float
    std: float
    n: int

    def __str__(self) -> str:
        return fmt_ms(self.mean, self.std, self.n)


class Num(NamedTuple):
    """A numeric table cell shown with ``digits`` decimals in Markdown (raw in the CSV)."""
    value: Any
    digits: int = 4

    def __str__(self) -> str:
        return fmt(self.value, self.digits)


def mean_std(xs: Sequence[float | None]) -> MeanStd:
    """Mean, sample standard deviation (ddof 1; NaN for one value) and count of the values."""
    v = [float(x) for x in xs if x is not None]
    if not v:
        return MeanStd(float('nan'), float('nan'), 0)
    return MeanStd(float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else float('nan'),
                   len(v))


class PairedDiff(NamedTuple):
    """Paired difference of two rows over their common seeds: mean of the per-seed
    differences, its t-interval ``[lo, hi]``, the number of pairs ``n`` and the differences'
    sample standard deviation ``sd``. Markdown shows ``+0.0123 [+0.0040, +0.0206]``; the CSV gets
    ``mean``, ``lo95`` and ``hi95`` columns."""
    mean: float
    lo: float
    hi: float
    n: int
    sd: float

    def __str__(self) -> str:
        if self.n == 0 or not math.isfinite(self.mean):
            return 'n/a (no common seeds)'
        if not math.isfinite(self.lo):
            return f'{self.mean:+.4f} (1 seed: no interval)'
        return f'{self.mean:+.4f} [{self.lo:+.4f}, {self.hi:+.4f}]'


def paired_difference(a: dict[int, float], b: dict[int, float],
                      level: float = 0.95) -> PairedDiff:
    """``a - b`` paired by seed: over the seeds both have, the mean difference
    ``d̄ = mean(a_s - b_s)`` and its two-sided Student-t interval
    ``d̄ ± t_{(1+level)/2, n-1} · sd(d) / sqrt(n)`` (``sd`` with ddof 1). With one common seed
    the interval is NaN; with none everything is NaN."""
    from scipy.stats import t as student_t
    seeds = sorted(set(a) & set(b))
    d = np.array([float(a[s]) - float(b[s]) for s in seeds], dtype=np.float64)
    n = len(seeds)
    if n == 0:
        return PairedDiff(float('nan'), float('nan'), float('nan'), 0, float('nan'))
    mean = float(d.mean())
    if n == 1:
        return PairedDiff(mean, float('nan'), float('nan'), 1, float('nan'))
    sd = float(d.std(ddof=1))
    half = float(student_t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return PairedDiff(mean, mean - half, mean + half, n, sd)


def fmt_ms(m: float, s: float, n: int, digits: int = 4) -> str:
    if n == 0 or not math.isfinite(m):
        return 'n/a'
    if n == 1 or not math.isfinite(s):
        return f'{m:.{digits}f}'
    return f'{m:.{digits}f} ± {s:.{digits}f}'


def fmt(x: Any, digits: int = 4) -> str:
    if x is None:
        return 'n/a'
    if isinstance(x, float):
        if not math.isfinite(x):
            return 'n/a'
        return f'{x:.{digits}f}' if abs(x) < 1e4 else f'{x:,.0f}'
    if isinstance(x, int):
        return f'{x:,}'
    return str(x)


class Report:
    """Collects the tables of one benchmark and writes ``<name>.md`` plus one CSV per table,
    every file stamped."""

    def __init__(self, folder: Path, benchmark: str, title: str, st: dict, units: list[dict],
                 plan: dict | None):
        self.folder, self.benchmark, self.title = Path(folder), benchmark, title
        self.stamp, self.units, self.plan = st, units, plan
        self.sections: list[str] = []
        self.files: list[Path] = []

    def cut_lines(self) -> list[str]:
        """What was actually run: units present vs planned, seeds, epochs, budget cuts."""
        units = self.units
        lines = []
        if self.plan is not None:
            have = {u['hash'] for u in units}
            missing = [p for p in self.plan['units'] if p['hash'] not in have]
            planned = {p['hash'] for p in self.plan['units']}
            others = sum(1 for u in units if u['hash'] not in planned)
            lines.append(f'units present: {len(self.plan["units"]) - len(missing)} of '
                         f'{len(self.plan["units"])} planned by the last command'
                         + (f'; missing: {", ".join(_short(p) for p in missing[:12])}'
                            + (' ...' if len(missing) > 12 else '') if missing else '')
                         + (f'; {others} more from earlier commands' if others else ''))
            if self.plan.get('quick'):
                lines.append('QUICK MODE (smoke test: few epochs and mini-batches on '
                             'tiktok-mini); these numbers say nothing about model quality')
        else:
            lines.append(f'units present: {len(units)} (no plan.json: planned count unknown)')
        train = [u for u in units if u.get('status') == 'ok' and 'history' in u]
        if train:
            seeds = sorted({u['spec']['seed'] for u in train})
            runs = [u['epochs_run'] for u in train]
            caps = sorted({u['train']['epochs'] for u in train})
            pats = sorted({u['train']['patience'] for u in train})
            bpe = sorted({str(u['train'].get('batches_per_epoch') or 'full') for u in train})
            cut = [u for u in train if u.get('budget_cut_at_epoch')]
            lines.append(f'seeds used: {seeds}; epochs run per unit: {min(runs)}..{max(runs)} '
                         f'(cap {caps}, patience {pats}, mini-batches per epoch {bpe}); '
                         f'units stopped by the --max-minutes budget: {len(cut)}')
            reused = sum(1 for u in units if u.get('reused_from'))
            if reused:
                lines.append(f'{reused} unit(s) reused from identical runs of other benchmarks')
        return lines

    def add_table(self, name: str, title: str, columns: list[str], rows: list[list[Any]],
                  notes: Sequence[str] = (), markdown: bool = True,
                  md: tuple[list[str], list[list[Any]]] | None = None) -> None:
        """Write ``<name>.csv``; add the table to the Markdown file too unless ``markdown`` is
        false (wide raw tables: the Markdown then only points at the CSV). ``md`` gives other
        ``(columns, rows)`` for the Markdown (annotated cells) than the CSV's numbers."""
        import csv
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f'{name}.csv'
        split = {j: _CSV_PARTS[type(c)] for row in rows for j, c in enumerate(row)
                 if type(c) in _CSV_PARTS}
        header = []
        for j, col in enumerate(columns):
            header += [f'{col} {part}' for part in split[j]] if j in split else [col]
        with open(path, 'w', newline='') as f:
            for line in stamp_lines(self.stamp) + unit_provenance(self.units):
                f.write(f'# {line}\n')
            f.write(f'# table: {title}\n')
            w = csv.writer(f)
            w.writerow(header)
            for row in rows:
                cells = []
                for j, c in enumerate(row):
                    if j in split:
                        parts = split[j]
                        cells += [_csv_cell(getattr(c, _CSV_FIELD.get(p, p))) for p in parts] \
                            if type(c) in _CSV_PARTS else [_csv_cell(c)] + [''] * (len(parts) - 1)
                    else:
                        cells.append(_csv_cell(c))
                w.writerow(cells)
        self.files.append(path)
        if not markdown:
            self.sections.append(f'## {title}\n\n{len(rows)} rows, {len(columns)} columns: '
                                 f'see `{path.name}`.\n')
            return
        md_columns, md_rows = md if md is not None else (columns, rows)
        lines = [f'## {title}', '']
        lines += [f'{n}' for n in notes] + ([''] if notes else [])
        lines.append('| ' + ' | '.join(md_columns) + ' |')
        lines.append('|' + '|'.join('---' for _ in md_columns) + '|')
        for row in md_rows:
            lines.append('| ' + ' | '.join(_md_cell(c) for c in row) + ' |')
        lines.append(f'\nCSV: `{path.name}`\n')
        self.sections.append('\n'.join(lines))

    def add_text(self, text: str) -> None:
        self.sections.append(text)

    def add_figure(self, fig, name: str, caption: str) -> None:
        import matplotlib.pyplot as plt
        st = self.stamp
        fig.text(0.005, 0.003, f'{st["commit"][:10]}{"+dirty" if st["dirty"] else ""} | '
                 f'{st["machine"][:70]} | torch {st["torch"]}, PyG {st["torch_geometric"]} | '
                 f'{st["date"]}', fontsize=6, color='0.4', ha='left', va='bottom')
        path = self.folder / f'{name}.png'
        self.folder.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110, metadata={
            'Title': caption, 'Description': '\n'.join(stamp_lines(st)),
            'Software': f'mmssl-pyg benchmarks, torch {st["torch"]}'})
        plt.close(fig)
        self.files.append(path)
        self.sections.append(f'![{caption}]({path.name})\n\n{caption}\n')

    def write(self) -> Path:
        path = self.folder / f'{self.benchmark}.md'
        head = [f'# {self.title}', '']
        head += [f'- {line}' for line in stamp_lines(self.stamp)]
        head += [f'- {line}' for line in unit_provenance(self.units)]
        head += [f'- {line}' for line in self.cut_lines()]
        text = '\n'.join(head) + '\n\n' + '\n\n'.join(self.sections) + '\n'
        self.folder.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        self.files.append(path)
        return path


#: Cells written as several CSV columns (``<column> <part>``), and the field of each part.
_CSV_PARTS = {MeanStd: ('mean', 'std'), PairedDiff: ('mean', 'lo95', 'hi95')}
_CSV_FIELD = {'lo95': 'lo', 'hi95': 'hi'}


def _short(p: dict) -> str:
    return f'{p["model"]}/{p["dataset"]}/{p["label"]}/s{p["seed"]}'


def _md_cell(c: Any) -> str:
    if isinstance(c, (str, MeanStd, Num, PairedDiff)):
        return str(c)
    return fmt(c)


def _csv_cell(c: Any) -> Any:
    if isinstance(c, Num):
        c = c.value
    if isinstance(c, float):
        return '' if not math.isfinite(c) else f'{c:.6g}'
    return '' if c is None else c
