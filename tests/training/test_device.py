"""Tests of ``mmssl_pyg/training/device.py``: the device, the seeds, the autocast dtype and the
peak memory of a run."""
from __future__ import annotations

import random
import resource
import sys

import numpy as np
import pytest
import torch

from mmssl_pyg.training import ConfigError
from mmssl_pyg.training.device import _amp_dtype, peak_memory_mb, resolve_device, seed_everything

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason='checks a machine without CUDA')


@NO_CUDA
def test_auto_is_the_cpu_without_cuda_and_a_cuda_device_is_refused_with_the_fix():
    assert resolve_device('auto') == torch.device('cpu')
    assert resolve_device() == torch.device('cpu')
    assert resolve_device(torch.device('cpu')) == torch.device('cpu')
    with pytest.raises(RuntimeError) as err:
        resolve_device('cuda:1')
    assert str(err.value) == (f"device 'cuda:1' was asked for but CUDA is not available (torch "
                              f"{torch.__version__}); use --device cpu or auto")


def test_seed_everything_seeds_python_numpy_and_torch():
    seed = 2**32 + 7  # numpy's legacy generator takes 32-bit seeds: it gets seed mod 2**32
    seed_everything(seed)
    got = random.random(), np.random.rand(), torch.rand(2)
    random.seed(seed)
    np.random.seed(7)
    torch.manual_seed(seed)
    want = random.random(), np.random.rand(), torch.rand(2)
    assert got[0] == want[0] and got[1] == want[1] and torch.equal(got[2], want[2])


def test_autocast_dtype_of_each_precision():
    cpu, cuda = torch.device('cpu'), torch.device('cuda')
    assert _amp_dtype('fp32', cpu) is None and _amp_dtype('fp32', cuda) is None
    assert _amp_dtype('bf16', cpu) is torch.bfloat16
    assert _amp_dtype('fp16', cuda) is torch.float16  # no CUDA call is made for fp16
    for device in ('cpu', 'mps'):
        with pytest.raises(ConfigError) as err:
            _amp_dtype('fp16', torch.device(device))
        assert str(err.value) == (
            f"precision fp16 needs a CUDA GPU (float16 autocast and its GradScaler); the device "
            f"is '{device}'. On a CPU use precision=bf16 (bfloat16 autocast) or fp32.")


def test_cpu_peak_memory_is_the_peak_resident_set_in_mib(monkeypatch):
    # ru_maxrss counts KiB on Linux and bytes on macOS; it only grows, so it is read before and
    # after the call
    for platform, unit in (('linux', 2**10), ('darwin', 2**20)):
        monkeypatch.setattr(sys, 'platform', platform)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        got = peak_memory_mb(torch.device('cpu'))
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        assert before / unit <= got <= after / unit
