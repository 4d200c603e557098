"""Helpers shared by the test suite (tests/): tiny graphs and datasets, the seeded
fit of the recorded-numbers tests, the in-process CLI and crafted files of the
adversarial tests, and the short GRCN/MMGCN run of its recorder. Not part of the
library API; needs pytest."""
from __future__ import annotations

import csv
import errno
import json
import math
import os
import pickle
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mmssl_pyg import cli
from mmssl_pyg.data import (
    EDGE,
    DatasetFormatError,
    MMSSLDataset,
    RecGraph,
)
from mmssl_pyg.data.builder import build_dataset
from mmssl_pyg.models import MMSSL, Batch, get_model_class
from mmssl_pyg.nn import (
    LowRankRows,
)
from mmssl_pyg.training import (
    TrainConfig,
    Trainer,
    evaluate_embeddings,
    resolve_options,
)

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


# user, item, rating, timestamp. With min_rating=4: A and B rate i1, i2, i3; C rates i1, i5;
# D rates i5; (A, i4) is below the threshold; (B, i1) appears twice (t=10 and t=30).
# 2-core, round 1: D has 1 interaction -> (D, i5) goes; round 2: i5 has 1 -> (C, i5) goes;
# round 3: C has 1 -> (C, i1) goes; then A, B x i1, i2, i3 remain: 2 users, 3 items, 6 pairs.
ROWS = [
    ('A', 'i1', 5, 1), ('A', 'i2', 4, 2), ('A', 'i3', 5, 3), ('A', 'i4', 2, 4),
    ('B', 'i1', 4, 10), ('B', 'i2', 5, 20), ('B', 'i3', 4, 5), ('B', 'i1', 5, 30),
    ('C', 'i1', 5, 7), ('C', 'i5', 5, 8),
    ('D', 'i5', 4, 9),
]


ITEMS = [('i1', 'Alpha', 'space'), ('i2', 'Beta', ''), ('i3', 'Gamma', 'sea'),
         ('i4', 'Delta', 'land'), ('i5', 'Epsilon', 'sky'), ('i9', 'Unused', 'x')]


THIRDS = (1 / 3, 1 / 3, 1 / 3)


def _write_csv(path: Path, header, rows, sep=','):
    with open(path, 'w', newline='') as f:
        w = csv.writer(f, delimiter=sep)
        w.writerow(header)
        w.writerows(rows)
    return path


class CountingEncoder:
    """Deterministic text features: [length, number of 'a', number of vowels]."""
    cache_key = 'counting-encoder-v1'

    def __init__(self):
        self.calls = 0

    def __call__(self, texts):
        self.calls += 1
        return np.array([[len(t), t.lower().count('a'), sum(t.lower().count(v) for v in 'aeiou')]
                         for t in texts], dtype=np.float32)


def _read(root: Path, name: str):
    return json.loads((root / 'raw' / name).read_text())


def _build(tables, out, **kw):
    inter, items = tables
    args = dict(user_col='user', item_col='item', rating_col='rating', time_col='ts',
                min_rating=4, kcore=2, ratios=THIRDS, progress=False)
    args.update(kw)
    return build_dataset(inter, out, **args)


DATASETS_DIR = Path(__file__).resolve().parents[1] / 'datasets'


def copy_raw(name: str, dst: Path) -> Path:
    """Copy ``datasets/<name>/raw`` to ``dst/<name>/raw``; return ``dst/<name>``."""
    root = dst / name
    shutil.copytree(DATASETS_DIR / name / 'raw', root / 'raw')
    return root


def split_counts(data) -> tuple[int, int, int]:
    store = data[EDGE]
    return (store.edge_index.size(1), store.val_edge_index.size(1),
            store.test_edge_index.size(1))


def dump(obj, path: Path) -> None:
    with open(path, 'wb') as f:
        pickle.dump(obj, f)


GOOD_SPLITS = {'train': {'0': [0, 1], '1': [2, 3], '2': [4]},
               'val': {'0': [2]}, 'test': {'1': [0], '2': [1]}}


def write_folder(root: Path, feats: dict | None = None, **splits) -> Path:
    """Write a small raw folder; a split given as ``str`` is written verbatim."""
    raw = root / 'raw'
    raw.mkdir(parents=True, exist_ok=True)
    for split in ('train', 'val', 'test'):
        content = splits.get(split, GOOD_SPLITS[split])
        text = content if isinstance(content, str) else json.dumps(content)
        (raw / f'{split}.json').write_text(text)
    if feats is None:
        feats = {'image': np.arange(20, dtype=np.float32).reshape(5, 4)}
    for name, arr in feats.items():
        if isinstance(arr, bytes):
            (raw / f'{name}_feat.npy').write_bytes(arr)
        else:
            np.save(raw / f'{name}_feat.npy', arr)
    return root


def load_error(root: Path, **kwargs) -> DatasetFormatError:
    with pytest.raises(DatasetFormatError) as err:
        MMSSLDataset(root, **kwargs)
    return err.value


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    """These workloads are tiny: intra-op threads only add contention on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _batches(graph: RecGraph, batch_size: int, gen: torch.Generator):
    """One epoch of (distinct users, random positive, uniform negative) batches."""
    rowptr, col = graph.train_rows()
    deg = rowptr[1:] - rowptr[:-1]
    active = torch.nonzero(deg > 0).flatten()
    for _ in range(-(-graph.num_train // batch_size)):
        users = active[torch.randperm(active.numel(), generator=gen)[:batch_size]]
        offset = (torch.rand(users.numel(), generator=gen) * deg[users]).long()
        pos = col[rowptr[users] + offset]
        neg = torch.randint(0, graph.num_items, (users.numel(),), generator=gen)
        yield Batch(users, pos, neg)


def _train(model, graph: RecGraph, epochs: int, lr: float, batch_size: int = 256, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.model_parameters(), lr=lr)
    model.train()
    for epoch in range(epochs):
        model.on_epoch_start(epoch)
        for batch in _batches(graph, batch_size, gen):
            out = model.loss(batch)
            assert torch.isfinite(out['loss'])
            opt.zero_grad()
            out['loss'].backward()
            opt.step()
        model.on_epoch_end(epoch)
    return out


def _random_ranking_recall(graph: RecGraph, split: str, k: int = 20) -> float:
    """Expected Recall@k of a uniformly random ranking of each user's non-training items: a
    held-out item that is not a training item is in the top k with probability
    ``min(1, k / candidates)``."""
    train = {}
    for u, i in graph.train_edge_index.t().tolist():
        train.setdefault(u, set()).add(i)
    held = {}
    ei = graph.val_edge_index if split == 'val' else graph.test_edge_index
    for u, i in ei.t().tolist():
        held.setdefault(u, set()).add(i)
    total = 0.0
    for u, items in held.items():
        seen = train.get(u, set())
        candidates = graph.num_items - len(seen)
        total += len(items - seen) / len(items) * min(1.0, k / candidates)
    return total / len(held)


def _popularity_recall(graph: RecGraph, split: str, k: int = 20) -> float:
    """Recall@k of ranking each user's non-training items by their number of training
    users (the evaluator the models are scored with; the scores are the degrees)."""
    keys = torch.unique(graph.train_edge_index[0] * graph.num_items + graph.train_edge_index[1])
    degree = torch.bincount(keys % graph.num_items, minlength=graph.num_items).double()
    users = torch.ones(graph.num_users, 1, dtype=torch.double)
    return evaluate_embeddings(users, degree.unsqueeze(1), graph, split, ks=(k,))[f'recall@{k}']


def _dense_knn_sets(x: torch.Tensor, k: int) -> list[set[int]]:
    xn = torch.nn.functional.normalize(x, dim=1)
    sim = xn @ xn.t()  # small reference only
    return [set(r.tolist()) for r in sim.topk(k, dim=1).indices]


def _dense_sym(edge_index, num_users, num_items):
    """``D_u^-1/2 R D_i^-1/2`` of the user-item matrix R (users x items), dense."""
    r = torch.zeros(num_users, num_items)
    r[edge_index[0], edge_index[1]] = 1.0
    du, di = r.sum(1), r.sum(0)
    inv = lambda d: torch.where(d > 0, d.clamp(min=1e-12).rsqrt(), torch.zeros_like(d))  # noqa: E731
    return inv(du)[:, None] * r * inv(di)[None, :]


def _dense_lightgcn(user_x, item_x, norm, layers):
    us, it, su, si = user_x, item_x, user_x, item_x
    for _ in range(layers):
        us, it = norm @ it, norm.t() @ us
        su, si = su + us, si + it
    return su / (layers + 1), si / (layers + 1)


NU, NI = 12, 20


def _graph(num_modalities=2, seed=0, num_users=NU, num_items=NI, edges=60):
    g = torch.Generator().manual_seed(seed)
    ei = torch.stack([torch.randint(0, num_users, (edges,), generator=g),
                      torch.randint(0, num_items, (edges,), generator=g)])
    # every user has at least one training item
    ei = torch.cat([ei, torch.stack([torch.arange(num_users),
                                     torch.arange(num_users) % num_items])], 1)
    ei = torch.unique(ei, dim=1)
    feats = {f'm{m}': torch.rand(num_items, 3 + m, generator=g) * (m + 1) * 5
             for m in range(num_modalities)}
    return RecGraph(num_users, num_items, ei, ei[:, :3], ei[:, :3], feats, 'tiny')


def _model(graph=None, **kw):
    torch.manual_seed(0)
    kw.setdefault('embedding_dim', 8)
    kw.setdefault('num_heads', 2)
    kw.setdefault('topk_rate', 0.15)
    return MMSSL(graph if graph is not None else _graph(), **kw)


def _batch(graph, n=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    users = torch.randperm(graph.num_users, generator=g)[:n]
    pos = torch.empty(n, dtype=torch.long)
    for k, u in enumerate(users.tolist()):
        items = graph.train_edge_index[1][graph.train_edge_index[0] == u]
        pos[k] = items[0]
    return Batch(users, pos, torch.randint(0, graph.num_items, (n,), generator=g))


def _dense_adj(edge_index, nu=NU, ni=NI):
    a = torch.zeros(nu, ni)
    a[edge_index[0], edge_index[1]] = 1.0
    return a


def _sym(a):
    du, di = a.sum(1).clamp(min=1), a.sum(0).clamp(min=1)
    return a / du.sqrt()[:, None] / di.sqrt()[None, :]


def _train_step(model, batch, opt_c, opt_m):
    if model.has_critic:
        c = model.critic_loss(batch)
        opt_c.zero_grad()
        c['loss'].backward()
        opt_c.step()
    out = model.loss(batch)
    opt_m.zero_grad()
    out['loss'].backward()
    opt_m.step()
    return out


def _optimisers(model):
    opt_c = torch.optim.Adam(model.critic_parameters(), lr=3e-4, betas=(0.5, 0.9)) \
        if model.has_critic else None
    return opt_c, torch.optim.AdamW(model.model_parameters(), lr=1e-2, weight_decay=0.0)


def _run_epoch(model, graph, opts, batches=3, seed=0):
    model.train()
    model.on_epoch_start(0)
    for b in range(batches):
        _train_step(model, _batch(graph, seed=seed * 100 + b), *opts)
    model.on_epoch_end(0)


FAST = dict(batch_size=8, progress=False, seed=3, ks=(10, 20), num_threads=1, device='cpu',
            patience=0)


def _fit(graph, epochs=2, model_kw=None, **cfg):
    torch.manual_seed(0)
    model = MMSSL(graph, embedding_dim=8, num_heads=2, topk_rate=0.1, **(model_kw or {}))
    trainer = Trainer(model, graph, TrainConfig(**{**FAST, 'epochs': epochs, **cfg}))
    return trainer.fit(), model, trainer


def graph_criticcolumns(num_users=30, num_items=64, edges=150, seed=0):
    g = torch.Generator().manual_seed(seed)
    ei = torch.stack([torch.randint(0, num_users, (edges,), generator=g),
                      torch.randint(0, num_items, (edges,), generator=g)])
    ei = torch.cat([ei, torch.stack([torch.arange(num_users),
                                     torch.arange(num_users) % num_items])], 1)
    ei = torch.unique(ei, dim=1)
    feats = {'img': torch.rand(num_items, 5, generator=g), 'txt': torch.rand(num_items, 3,
                                                                             generator=g)}
    return RecGraph(num_users, num_items, ei, ei[:, :3], ei[:, :3], feats, 'tiny')


def batch_criticcolumns(graph, n=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    users = torch.randperm(graph.num_users, generator=g)[:n]
    ei = graph.train_edge_index
    pos = torch.stack([ei[1][ei[0] == u][0] for u in users.tolist()])
    return Batch(users, pos, torch.randint(0, graph.num_items, (n,), generator=g))


# 4 users, 5 items; user 3 and item 4 have no edge (so sizes cannot be read off the indices)
EDGES = torch.tensor([[0, 0, 1, 2, 2, 2, 0], [0, 3, 1, 0, 1, 2, 2]])


NUM_USERS, NUM_ITEMS = 4, 5


# --------------------------------------------------------------------------- MMSSL model
def _tiny_graph():
    return _graph()


def _blocks(values_grad: bool, gen: torch.Generator) -> tuple[list[LowRankRows], list]:
    """Three blocks of 9 columns: low-rank + sparse, sparse only, low-rank + dense; and the
    leaf tensors that should receive gradients."""
    def leaf(*shape):
        return torch.randn(*shape, generator=gen).requires_grad_(True)
    index = torch.tensor([[0, 0, 2, 3, 3], [1, 4, 8, 0, 4]])
    leaves = [leaf(4, 3), leaf(9, 3), torch.rand(4, generator=gen).requires_grad_(True)]
    value = torch.randn(5, generator=gen).requires_grad_(values_grad)
    sparse_only = torch.rand(3, generator=gen).requires_grad_(values_grad)
    dense = leaf(2, 9)
    blocks = [LowRankRows(4, 9, left=leaves[0], right=leaves[1], scale=leaves[2], index=index,
                          value=value),
              LowRankRows(3, 9, index=torch.tensor([[0, 1, 2], [2, 2, 7]]), value=sparse_only),
              LowRankRows(2, 9, left=leaf(2, 3), right=leaf(9, 3), dense=dense)]
    leaves += [blocks[2].left, blocks[2].right, dense]
    if values_grad:
        leaves += [value, sparse_only]
    return blocks, leaves


def metrics_of(run: Path) -> dict:
    return json.loads((run / 'metrics.json').read_text())


def evaluate_json(capsys, checkpoint, *extra) -> tuple[int, dict | None, str]:
    code, out, err = run_cli(['evaluate', checkpoint, '--json', '--device', 'cpu', *extra],
                             capsys)
    return code, (json.loads(out) if code == 0 else None), err


def no_space_for(name_part: str):
    """An ``os.fsync`` that fails like a full disk for temporary files of ``name_part``."""
    real = os.fsync

    def fsync(fd):
        if name_part in os.readlink(f'/proc/self/fd/{fd}'):
            raise OSError(errno.ENOSPC, 'No space left on device')
        return real(fd)
    return fsync


def exclusion_graph():
    """2 users, 5 items, hand-set scores (item embeddings are the identity, so a user's
    embedding is its score row). User 0: train {0}, val {1}, test {2}, scores
    [9, 3, 2, 1, 0]; user 1: train {3}, val {4}, test {2}, scores [0, 1, 2, 9, 3]. With the
    training item excluded, each user's top-1 is its val item; with the val item excluded
    too, it is the test item 2."""
    train = torch.tensor([[0, 1], [0, 3]])
    val = torch.tensor([[0, 1], [1, 4]])
    test = torch.tensor([[0, 1], [2, 2]])
    graph = RecGraph(2, 5, train, val, test, name='exclusion')
    user_emb = torch.tensor([[9., 3., 2., 1., 0.], [0., 1., 2., 9., 3.]])
    return graph, user_emb, torch.eye(5)


def seeded_fit(build, graph: RecGraph, train) -> tuple:
    """Seed torch with ``train.seed``, build the model with ``build()``, fit it on validation only
    and return ``(fit result, [user embedding norm, item embedding norm])`` of the selected
    epoch; torch's thread count is restored afterwards (``train.num_threads`` changes it).
    The recorded-numbers tests (refactor and speed invariance) share this run."""
    threads = torch.get_num_threads()
    try:
        torch.manual_seed(train.seed)
        model = build()
        result = Trainer(model, graph, train).fit(test=False)
        model.eval()
        with torch.no_grad():
            user, item = model.get_embedding()
    finally:
        torch.set_num_threads(threads)
    return result, [float(user.norm()), float(item.norm())]


def synthetic_graph(num_users: int = 60, num_items: int = 40, per_user: int = 8,
                    seed: int = 0, name: str = 'synthetic') -> RecGraph:
    """Random interactions split 80/10/10 at random, so users have 0..several held-out
    items in each split."""
    g = torch.Generator().manual_seed(seed)
    keys = torch.unique(torch.randint(num_users * num_items, (num_users * per_user,),
                                      generator=g))
    keys = keys[torch.randperm(keys.numel(), generator=g)]
    n = keys.numel()
    a, b = int(n * 0.8), int(n * 0.9)
    ei = torch.stack([keys // num_items, keys % num_items])
    return RecGraph(num_users, num_items, ei[:, :a], ei[:, a:b], ei[:, b:], name=name)


def write_json_dataset(folder: str | Path, num_users: int = 120, num_items: int = 80,
                       per_user: int = 10, seed: int = 0) -> Path:
    """A tiny dataset in the MMSSL / LATTICE raw format (``raw/{train,val,test}.json``:
    user id string -> item id list); every user has training items and one val and one test
    item, like the bundled data."""
    g = torch.Generator().manual_seed(seed)
    raw = Path(folder) / 'raw'
    raw.mkdir(parents=True, exist_ok=True)
    splits = {'train': {}, 'val': {}, 'test': {}}
    for u in range(num_users):
        items = torch.randperm(num_items, generator=g)[:per_user].tolist()
        splits['val'][str(u)] = items[:1]
        splits['test'][str(u)] = items[1:2]
        splits['train'][str(u)] = items[2:]
    for name, data in splits.items():
        (raw / f'{name}.json').write_text(json.dumps(data))
    return Path(folder)


def read_json_dataset(folder: str | Path, name: str = 'custom') -> RecGraph:
    """Minimal reader of :func:`write_json_dataset` output (the library's loader is
    ``mmssl_pyg.data.load_dataset``; this one keeps the trainer tests independent of it)."""
    raw = Path(folder) / 'raw'
    eis = {}
    for split in ('train', 'val', 'test'):
        data = json.loads((raw / f'{split}.json').read_text())
        pairs = [(int(u), int(i)) for u, items in data.items() for i in items]
        eis[split] = torch.tensor(pairs, dtype=torch.long).t().reshape(2, -1)
    num_users = 1 + max(int(e[0].max()) for e in eis.values() if e.numel())
    num_items = 1 + max(int(e[1].max()) for e in eis.values() if e.numel())
    return RecGraph(num_users, num_items, eis['train'], eis['val'], eis['test'], name=name)


def read_wandb_file(path: Path) -> dict:
    """Records of a ``run-<id>.wandb`` file: the LevelDB-style log that wandb writes (a 7-byte
    header, then 32 KiB blocks of ``crc32 | length | type`` chunks, each record a protobuf
    ``Record``). Returns ``{'config', 'history' (list), 'summary', 'run'}``."""
    from wandb.proto import wandb_internal_pb2 as pb
    data = path.read_bytes()
    ident, magic, version = struct.unpack('<4sHB', data[:7])
    assert ident == b':W&B' and magic == 0xBEE1, 'not a .wandb file'
    block, pos, records, pending = 32768, 7, [], b''
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack('<IHB', data[pos:pos + 7])
        if length == 0 and kind == 0:
            break
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 1:                      # FULL
            records.append(chunk)
        elif kind == 2:                    # FIRST
            pending = chunk
        elif kind == 3:                    # MIDDLE
            pending += chunk
        elif kind == 4:                    # LAST
            records.append(pending + chunk)
    out = {'config': {}, 'history': [], 'summary': {}, 'run': None}
    for raw in records:
        rec = pb.Record()
        rec.ParseFromString(raw)
        which = rec.WhichOneof('record_type')
        if which == 'run':
            out['run'] = rec.run
            out['config'].update({i.key: json.loads(i.value_json) for i in rec.run.config.update})
        elif which == 'config':
            out['config'].update({i.key: json.loads(i.value_json) for i in rec.config.update})
        elif which == 'history':
            out['history'].append({i.key or '/'.join(i.nested_key): json.loads(i.value_json)
                                   for i in rec.history.item})
        elif which == 'summary':
            out['summary'].update({i.key or '/'.join(i.nested_key): json.loads(i.value_json)
                                   for i in rec.summary.update})
    return out


REPO = Path(__file__).resolve().parents[1]


#: Fast training options of the in-process CLI runs.
FAST_adversarial = ['--model', 'lightgcn', '--epochs', '2', '--wandb', 'disabled', '--no-progress',
        '--device', 'cpu', 'num_threads=1', 'embedding_dim=8', 'batch_size=64']


class Payload:
    """Unpickling this object calls ``func(*args)``: the classic pickle code-execution trick.

    Used with ``func=open, args=(marker, 'w')`` it creates ``marker``; with ``os.system`` it
    runs a shell command. A loader that never runs code leaves the marker absent."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def payloads(marker: Path) -> dict[str, Payload]:
    """Three ways a pickle can act on the machine, each creating ``marker``."""
    return {
        'open': Payload(open, (str(marker), 'w')),
        'os.system': Payload(os.system, (f'touch {marker}',)),
        'exec': Payload(exec, (f'open({str(marker)!r}, "w").close()',)),
    }


def write_torch_payload(path: Path, payload: Payload) -> Path:
    """A ``torch.save`` file (zip format, as a processed cache or checkpoint) whose unpickling
    runs ``payload``; the tensors around it make it look like real data."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({'data': {'x': torch.ones(3)}, 'format': 'mmssl-pyg-processed',
                'hook': payload}, path)
    return path


def write_pickle_payload(path: Path, payload: Payload) -> Path:
    """A plain pickle (like the DiffMM ``trnMat.pkl``) whose unpickling runs ``payload``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(payload))
    return path


def copy_mini(dst: Path) -> Path:
    """A private copy of ``datasets/tiktok-mini/raw`` under ``dst/mini/raw``; returns the
    dataset root."""
    root = dst / 'mini'
    shutil.copytree(REPO / 'datasets' / 'tiktok-mini' / 'raw', root / 'raw')
    return root


def write_splits(root: Path, splits: dict[str, dict[str, list[int]]]) -> Path:
    """``root/raw/{train,val,test}.json`` from ``{split: {user: [items]}}``."""
    raw = root / 'raw'
    raw.mkdir(parents=True, exist_ok=True)
    for name, data in splits.items():
        (raw / f'{name}.json').write_text(json.dumps(data))
    return root


def small_splits(num_users: int = 12, num_items: int = 10) -> dict[str, dict[str, list[int]]]:
    """Every user has two training items, one validation and one test item; every item id in
    ``range(num_items)`` is used."""
    train, val, test = {}, {}, {}
    for u in range(num_users):
        items = [(u + j) % num_items for j in range(4)]
        train[str(u)], val[str(u)], test[str(u)] = items[:2], items[2:3], items[3:4]
    return {'train': train, 'val': val, 'test': test}


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """``mmssl-pyg ARGV`` in-process: ``(exit status, stdout, stderr)``; argparse's own
    errors (``SystemExit``) give their exit status too."""
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_user_error(code: int, err: str, *needles: str) -> None:
    """Exit status 2, one ``mmssl-pyg <command>: error:`` line naming every needle, and no
    traceback."""
    assert code == 2, err
    assert 'Traceback' not in err, err
    line = next((ln for ln in err.splitlines() if ': error: ' in ln), None)
    assert line is not None and line.startswith('mmssl-pyg '), err
    for needle in needles:
        assert needle in err, (needle, err)


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` and its bytes (to prove that nothing was written)."""
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob('*')) if p.is_file()}


def assert_no_marker(path: Path) -> None:
    assert not path.exists(), f'a crafted file ran code: {path} was created'


GRCN_MMGCN = ('grcn', 'mmgcn')


GRCN_MMGCN_SHORT = {'progress': False, 'device': 'cpu', 'num_threads': 1, 'epochs': 3,
         'batches_per_epoch': 3, 'batch_size': 256, 'ks': (20,), 'seed': 2023,
         'patience': 0}


def grcn_mmgcn_run(name: str, graph: RecGraph, prepare=None) -> dict:
    """Per-epoch train losses and validation metrics, best epoch and final embedding norms of
    ``name`` trained on ``graph`` (tiktok-mini) with :data:`GRCN_MMGCN_SHORT` over its preset;
    ``prepare(model)``, when given, runs on the freshly built model before training."""
    cls = get_model_class(name)
    options = resolve_options(cls, 'tiktok-mini', model_name=name, train_updates=GRCN_MMGCN_SHORT)

    def build():
        model = cls(graph, **options.model_kwargs)
        if prepare is not None:
            prepare(model)
        return model
    result, norms = seeded_fit(build, graph, options.train)
    return {'losses': [h['train/loss'] for h in result.history],
            'val': [{k[4:]: v for k, v in h.items() if k.startswith('val/')}
                    for h in result.history],
            'best_epoch': result.best_epoch,
            'embedding_norms': norms}


def make_tiny_graph(num_modalities: int = 2, num_users: int = 20, num_items: int = 30,
                    seed: int = 0, dims=(8, 5, 6)) -> RecGraph:
    """A random ``num_users x num_items`` training graph (every user has an item, ~100
    edges) with ``num_modalities`` Gaussian item features of widths ``dims`` and no
    held-out pairs."""
    gen = torch.Generator().manual_seed(seed)
    users = torch.cat([torch.arange(num_users), torch.randint(0, num_users, (80,), generator=gen)])
    items = torch.randint(0, num_items, (users.numel(),), generator=gen)
    edge_index = torch.unique(torch.stack([users, items]), dim=1)
    feats = {f'm{j}': torch.randn(num_items, dims[j], generator=gen)
             for j in range(num_modalities)}
    empty = torch.zeros(2, 0, dtype=torch.long)
    return RecGraph(num_users, num_items, edge_index, empty, empty, feats, 'tiny')


def tiny_batch(graph: RecGraph, num_users: int = 8, seed: int = 0) -> Batch:
    """Distinct users, one of each user's training items, one uniform random negative."""
    gen = torch.Generator().manual_seed(seed)
    rowptr, col = graph.train_rows()
    active = torch.nonzero(rowptr[1:] > rowptr[:-1]).flatten()
    users = active[torch.randperm(active.numel(), generator=gen)[:num_users]]
    pos = col[rowptr[users]]
    neg = torch.randint(0, graph.num_items, (users.numel(),), generator=gen)
    return Batch(users, pos, neg)


#: A batch of three (user, positive, negative) triples for the by-hand loss tests.
HAND_BATCH = ([0, 4, 7], [1, 2, 8], [5, 0, 3])


def hand_batch() -> Batch:
    """:data:`HAND_BATCH` as a :class:`~mmssl_pyg.models.Batch`."""
    return Batch(*(torch.tensor(t) for t in HAND_BATCH))


def _dot(a, b) -> float:
    return sum(float(x) * float(y) for x, y in zip(a, b))


def bpr_and_l2_by_hand(score_user, score_item, reg_user, reg_item,
                       reg_weight: float) -> tuple[float, float]:
    """BPR loss and L2 term of :data:`HAND_BATCH` with Python floats: ``-mean log
    sigmoid(s_ui - s_uj)`` on the inner products of the ``score_*`` rows, and ``reg_weight *
    sum (||u||^2 + ||i||^2 + ||j||^2) / (2 B)`` on the ``reg_*`` rows."""
    users, pos, neg = HAND_BATCH
    bpr = sum(math.log1p(math.exp(_dot(score_user[u], score_item[n])
                                  - _dot(score_user[u], score_item[p])))
              for u, p, n in zip(users, pos, neg)) / len(users)
    squares = sum(_dot(reg_user[u], reg_user[u]) + _dot(reg_item[p], reg_item[p])
                  + _dot(reg_item[n], reg_item[n]) for u, p, n in zip(users, pos, neg))
    return bpr, reg_weight * squares / (2 * len(users))


def lightgcn_bpr_and_l2_by_hand(model, graph: RecGraph, reg_weight: float) -> tuple[float, float]:
    """:func:`bpr_and_l2_by_hand` for a LightGCN encoder (LightGCN, SGL): scores from the
    dense-reference propagation of ``model.user_emb`` / ``model.item_emb`` over
    ``model.num_layers`` layers, L2 on their layer-0 rows."""
    with torch.no_grad():
        eu, ei = model.user_emb.weight, model.item_emb.weight
        norm = _dense_sym(graph.train_edge_index, graph.num_users, graph.num_items)
        ref_u, ref_i = _dense_lightgcn(eu, ei, norm, model.num_layers)
    return bpr_and_l2_by_hand(ref_u.tolist(), ref_i.tolist(), eu.tolist(), ei.tolist(),
                              reg_weight)


def assert_xavier_uniform(weight: torch.Tensor) -> None:
    """``weight`` (``[rows, cols]``) looks Xavier-uniform drawn: inside
    ``sqrt(6 / (rows + cols))``, and its largest entry above half of that bound."""
    bound = math.sqrt(6 / sum(weight.shape))
    assert bound / 2 < weight.detach().abs().max() <= bound


def assert_loss_terms(out: dict, bpr: float, reg: float, rel: float = 1e-5) -> None:
    """``out`` (a model's loss dict) holds ``bpr``, ``reg`` and ``loss`` = their sum plus any
    other named term."""
    assert out['bpr'].item() == pytest.approx(bpr, rel=rel)
    assert out['reg'].item() == pytest.approx(reg, rel=rel)
    rest = sum(v.item() for k, v in out.items() if k not in ('loss', 'bpr', 'reg'))
    assert out['loss'].item() == pytest.approx(bpr + reg + rest, rel=rel)


#: benchmarks/PROTOCOL.md Sec. 8, a deliberate change after the recording: these models' default
#: blocks became one of their study winners (benchmarks/results/study/<dataset>/<model>/), so every
#: dataset without its own values resolves to them: ({model option: value}, {train option: value}).
STUDY_DEFAULTS = {
    'mf': ({'reg_weight': 0.04756722009937019}, {'lr': 0.005183195358748659}),
    'lightgcn': ({'reg_weight': 0.025867965024613852, 'num_layers': 1},
                 {'lr': 0.004207112022503625}),
    'vbpr': ({'reg_weight': 0.02014912213748799}, {'lr': 0.009997837437915777}),
    # the MovieLens-100K winner (the rule's choice for FREEDOM)
    'freedom': ({'reg_weight': 0.0007549512266404008, 'dropout': 0.8},
                {'lr': 0.0032499669479670638}),
    # the MovieLens-100K winner (the rule's choice for BM3; its layers and dropout are the
    # class defaults)
    'bm3': ({'reg_weight': 0.04961326086920538, 'num_layers': 1, 'dropout': 0.5},
            {'lr': 0.004325529382837775}),
    # the MovieLens-100K winner (the rule's choice for LATTICE)
    'lattice': ({'reg_weight': 6.796714392043717e-05}, {'lr': 0.0022564264721347525}),
    # the TikTok winner (the rule's choice for SGL; its num_layers 3 is the class default)
    'sgl': ({'reg_weight': 1.4380758180994156e-06, 'num_layers': 3, 'ssl_ratio': 0.3,
             'ssl_temp': 1.0, 'ssl_weight': 0.01}, {'lr': 0.00021489384538387474}),
}
