"""Results do not depend on the order in which a launch's programs run (interpreter, CPU).

The interpreter runs a grid in order, so the last program to arrive at a split reduction's
counter is always the one with the highest split index: an epilogue run by "the highest split
index" instead of "the last ticket" would pass every in-order test. Here the interpreter runs
each grid in a given order of its program ids: reversed (every tile's highest split index runs
first, so such an epilogue sums partials not written yet: NaN from the poisoned scratch) and
seeded random permutations. Every kernel that reduces across programs runs so: the split-K
kernels (F1, F2, B2, B3), the tiled path's split dW reductions, the LayerNorm partials (B1 and
B3's column sums, the chunked F3 and B1 of wide rows) and the grouped op's partials.
"""

import random

import pytest
import torch
import triton
import triton.language as tl
import triton.runtime.interpreter as interpreter
from grouped_op_cases import check_against_reference, make_inputs
from shared_op_cases import check_kernels, small_split_k

from rpt_fast.ops import triton_backend, triton_grouped, triton_splitk
from rpt_fast.ops import triton_residual_mlp as trm

pytestmark = pytest.mark.skipif(
    triton_backend.unavailable_reason(torch.empty(1)) is not None,
    reason="the Triton interpreter is off (TRITON_INTERPRET unset)",
)

ORDERS = ["reversed", "random-0", "random-1"]


def _permute(ids: list, order: str) -> list:
    if order == "reversed":
        return ids[::-1]
    shuffled = list(ids)
    random.Random(int(order.split("-")[1])).shuffle(shuffled)
    return shuffled


@pytest.fixture
def program_order(monkeypatch):
    """``program_order(order)``: from then on the interpreter runs each grid's programs in that
    order. Its executor loops over x, then y, then z, telling the builder each program id
    (triton 3.6 and 3.9): the builder hands the kernel the permuted one instead."""
    builder = interpreter.interpreter_builder
    set_grid_dim, set_grid_idx = builder.set_grid_dim, builder.set_grid_idx
    state = {}

    def permuted_grid_dim(nx, ny, nz):
        set_grid_dim(nx, ny, nz)
        ids = [(x, y, z) for x in range(nx) for y in range(ny) for z in range(nz)]
        state["ids"], state["dims"] = _permute(ids, state["order"]), (ny, nz)

    def permuted_grid_idx(x, y, z):
        ny, nz = state["dims"]
        set_grid_idx(*state["ids"][(x * ny + y) * nz + z])

    def use(order: str):
        state["order"] = order
        monkeypatch.setattr(builder, "set_grid_dim", permuted_grid_dim)
        monkeypatch.setattr(builder, "set_grid_idx", permuted_grid_idx)

    return use


@triton.jit
def _arrival_order_kernel(count_ptr, out_ptr):
    pid = tl.program_id(0) * tl.num_programs(1) + tl.program_id(1)
    tl.store(out_ptr + pid, tl.atomic_add(count_ptr, 1))


@pytest.mark.parametrize("order", ORDERS)
def test_programs_run_in_the_order_given(order, program_order):
    program_order(order)
    count = torch.zeros(1, dtype=torch.int32)
    arrival = torch.empty(12, dtype=torch.int32)
    _arrival_order_kernel[(3, 4)](count, arrival)
    ids = [(x, y, 0) for x in range(3) for y in range(4)]
    expected = torch.empty(12, dtype=torch.int32)
    for rank, (x, y, _) in enumerate(_permute(ids, order)):
        expected[x * 4 + y] = rank
    assert torch.equal(arrival, expected)


@pytest.mark.parametrize("order", ORDERS)
def test_split_k_kernels_in_any_program_order(order, program_order, monkeypatch, poisoned):
    small_split_k(monkeypatch, 64)  # grids: F1 3x5, F2 5x3, B2 3x5, B3 5x(3+1)
    program_order(order)
    check_kernels(17, 72, 40, torch.float32)


@pytest.mark.parametrize("order", ORDERS)
def test_tiled_split_reductions_in_any_program_order(order, program_order, monkeypatch,
                                                      poisoned):
    monkeypatch.setattr(trm, "MIN_GRAD_CHUNK_STEPS", 1)  # dW1/dW2: 10 chunks of 32 rows
    monkeypatch.setattr(trm, "MAX_PARTIALS", 8)  # B1: 8 programs of LayerNorm partials
    program_order(order)
    check_kernels(300, 40, 24, torch.float32)


@pytest.mark.parametrize("M", [20, 150])
def test_chunked_layer_norm_in_any_program_order(M, program_order, monkeypatch, poisoned):
    monkeypatch.setattr(trm, "ROW_KERNEL_CONFIGS", (trm.RowKernelConfig(128, 1, 4, True),))
    monkeypatch.setattr(trm, "WIDE_BLOCK_N", 32)
    monkeypatch.setattr(trm, "MAX_PARTIALS", 8)
    small_split_k(monkeypatch, 64)
    program_order("reversed")
    check_kernels(M, 100, 40, torch.float32)


@pytest.mark.parametrize("order", ORDERS)
def test_grouped_kernels_in_any_program_order(order, program_order, monkeypatch, poisoned):
    monkeypatch.setattr(triton_grouped, "TARGET_PROGRAMS", 12)  # up/down grads in 2 chunks
    program_order(order)
    check_against_reference(make_inputs(2, 300, 150), torch.float32)


@triton.jit
def _highest_split_index(count_ptr, block, n_splits):
    return tl.program_id(1) == n_splits - 1


def test_an_epilogue_run_by_the_highest_split_index_fails_in_reversed_order(
        program_order, monkeypatch, poisoned):
    """The tests above can fail: with the ticket replaced by "highest split index", in-order
    runs still pass, the reversed order does not."""
    small_split_k(monkeypatch, 64)
    monkeypatch.setattr(triton_splitk, "_last_to_arrive", _highest_split_index)
    check_kernels(17, 72, 40, torch.float32)
    program_order("reversed")
    with pytest.raises(AssertionError, match="unwritten|relative error"):
        check_kernels(17, 72, 40, torch.float32)
