"""Shared helpers of the adversarial suites (tests/test_adversarial_*.py): crafted files that
would run code when unpickled, tiny datasets, and the CLI called in-process."""
from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import torch

from mmssl_pyg import cli

REPO = Path(__file__).resolve().parents[1]
#: Fast training options of the in-process CLI runs.
FAST = ['--model', 'lightgcn', '--epochs', '2', '--wandb', 'disabled', '--no-progress',
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
