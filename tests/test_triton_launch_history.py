"""No result depends on what earlier launches left behind (interpreter, CPU tensors).

On a GPU, state left by an earlier launch shows up when a CUDA graph is captured without
warm-up, graphs are replayed in another order or on two streams, or a launch dies
(tests/test_gpu_launch_history.py covers those on the device). Here every tensor the ops
modules could keep between calls, and every fresh allocation the launchers take as scratch,
is filled with small nonzero integers (NaN for floats) before the call that is checked.
"""

import importlib
import pkgutil

import pytest
import torch
from shared_op_cases import check_kernels, small_split_k

import rpt_fast.ops


def _ops_modules():
    return [importlib.import_module(f"rpt_fast.ops.{info.name}")
            for info in pkgutil.iter_modules(rpt_fast.ops.__path__)]


def _kept_tensors() -> list:
    """Tensors the ops modules hold between calls: module globals, or in their dicts/lists."""
    found = []
    for module in _ops_modules():
        for value in vars(module).values():
            if isinstance(value, dict):
                value = list(value.values())
            items = value if isinstance(value, (list, tuple)) else [value]
            found += [t for t in items if isinstance(t, torch.Tensor)]
    return found


def _poison(t: torch.Tensor) -> torch.Tensor:
    """NaN for floating tensors; 1, 2, 3, 1, ... for integer ones (a counter never at 0)."""
    if t.is_floating_point():
        return t.fill_(float("nan"))
    if t.numel():
        t.copy_((torch.arange(t.numel()) % 3 + 1).view(t.shape))
    return t


@pytest.fixture
def poisoned_scratch(monkeypatch):
    """torch.empty, torch.empty_like and Tensor.new_empty hand out poisoned tensors."""
    empty, empty_like, new_empty = torch.empty, torch.empty_like, torch.Tensor.new_empty
    monkeypatch.setattr(torch, "empty", lambda *a, **k: _poison(empty(*a, **k)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **k: _poison(empty_like(*a, **k)))
    monkeypatch.setattr(torch.Tensor, "new_empty", lambda *a, **k: _poison(new_empty(*a, **k)))


# (M, d, m, target programs): split-K with several splits per launch (F1, B2, B3 count
# arrivals) and the tiled path (B3's split dW reductions count arrivals).
CASES = [(10, 96, 40, 64), (37, 40, 72, 200), (300, 40, 24, None)]


@pytest.mark.parametrize("M, d, m, target", CASES, ids=str)
def test_results_ignore_what_earlier_launches_left(M, d, m, target, monkeypatch,
                                                   poisoned_scratch):
    if target is not None:
        small_split_k(monkeypatch, target)
    check_kernels(M, d, m, torch.float32)  # a first call: whatever state it makes exists now
    for t in _kept_tensors():
        _poison(t)
    check_kernels(M, d, m, torch.float32)


def test_ops_modules_keep_no_tensors_between_calls():
    check_kernels(10, 32, 8, torch.float32)
    assert _kept_tensors() == []
