"""The cost model and the launch plans it prices (rpt_fast.ops.plan): structure counted
without a GPU. The plans are the launchers' own (built on meta tensors)."""

import json

import pytest
import torch
import triton

from rpt_fast.ops import cost_model, plan
from rpt_fast.ops import triton_residual_mlp as trm
from rpt_fast.ops.launches import ZeroFill

HEADLINE_SMALL_M = [(100, 2048, 800), (100, 4096, 800), (10, 768, 400)]
LARGE_M = (16384, 1024, 256)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
@pytest.mark.parametrize("shape", HEADLINE_SMALL_M, ids=str)
def test_weight_reading_launches_fill_an_h200(shape, dtype):
    forward, backward = trm.plans(*shape, dtype)
    weight_reading = [launch for launch in forward + backward if launch.weight_reading]
    assert len(weight_reading) == 4  # F1, F2, B2, B3
    for launch in weight_reading:
        assert launch.programs >= 128, f"{launch.name}: {launch.programs} programs"


@pytest.mark.parametrize("shape", [*HEADLINE_SMALL_M, LARGE_M], ids=str)
def test_launch_counts(shape):
    """3 kernels per pass; the split-K forward also zeroes F1's arrival counters (a launch the
    model prices like any other); the backward's B1 zeroes B2's and B3's."""
    forward, backward = trm.plans(*shape, torch.bfloat16)
    fills = [launch for launch in forward + backward if isinstance(launch, ZeroFill)]
    assert len(forward) == (3 if shape == LARGE_M else 4) and len(backward) == 3
    assert [launch.name[:2] for launch in fills] == ([] if shape == LARGE_M else ["F0"])
    assert all(launch.programs >= 1 for launch in forward + backward)


def test_estimate_within_3_5x_of_the_floor_at_the_paper_shape():
    """3.2x by the model: launch overheads are a third of it (7 launches, F0 included)."""
    report = plan.estimate("shared", 100, 2048, 800, "bf16", "h200")
    full = report["full"]
    assert full["graph_seconds"] <= 3.5 * full["floor_seconds"], full
    assert full["eager_seconds"] > full["graph_seconds"]


def test_large_m_beats_eager_by_the_model():
    ours = plan.estimate("shared", *LARGE_M, "bf16", "h200")["full"]
    eager = plan.estimate("eager", *LARGE_M, "bf16", "h200")["full"]
    assert eager["graph_seconds"] >= 1.2 * ours["graph_seconds"]


def test_few_programs_cannot_reach_the_bandwidth():
    gpu = cost_model.GPUS["h200"]
    few = cost_model.launch_cost(gpu, "few", 14, 10**7, 0, "bf16")
    full = cost_model.launch_cost(gpu, "full", 132, 10**7, 0, "bf16")
    assert full.bandwidth == pytest.approx(gpu.bandwidth * cost_model.BANDWIDTH_EFFICIENCY)
    assert few.bandwidth < full.bandwidth / 5 and few.seconds > 5 * full.seconds


def test_floor_is_the_ops_bytes_at_the_bandwidth():
    gpu = cost_model.GPUS["h200"]
    nbytes, _ = cost_model.op_cost("shared", "full", 100, 2048, 800, 2)
    floor = cost_model.op_floor(gpu, "shared", "full", 100, 2048, 800, 2, "bf16")
    assert floor == pytest.approx(nbytes / (gpu.bandwidth * cost_model.BANDWIDTH_EFFICIENCY))


def test_cli_prints_every_launch_and_the_totals(capsys):
    assert plan.main(["--shape", "100,2048,800", "--dtype", "bf16", "--gpu", "h200"]) == 0
    out = capsys.readouterr().out
    for name in ("F1", "F2", "F3", "B1", "B2", "B3", "full", "floor", "vs eager"):
        assert name in out
    assert plan.main(["--shape", "10,768,400", "--gpu", "a100", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["gpu"].startswith("A100") and len(report["forward"]["launches"]) == 4
    with pytest.raises(SystemExit):
        plan.main(["--shape", "10,768"])


def test_cli_grouped_op_uses_its_launch_plan_when_present(capsys):
    from rpt_fast.ops import triton_grouped

    if not hasattr(triton_grouped, "launch_plan"):
        with pytest.raises(SystemExit, match="launch_plan"):
            plan.main(["--op", "grouped", "--shape", "10,768,400"])
        return
    assert plan.main(["--op", "grouped", "--shape", "100,2048,800"]) == 0
    assert "grouped op" in capsys.readouterr().out


@pytest.mark.parametrize("shape", [*HEADLINE_SMALL_M, LARGE_M], ids=str)
def test_launch_plans_call_no_triton_constexpr_function(shape, monkeypatch):
    """A plan is built on every eager call, so its host time is the op's at prompt shapes.
    triton.cdiv and friends are constexpr functions there (1.7 us per call on triton 3.6 and
    3.9): the plans use plain integer arithmetic instead. Counted, not timed."""
    from triton.runtime.jit import ConstexprFunction

    from rpt_fast.ops import triton_grouped

    calls = []
    original = ConstexprFunction.__call__

    def counting(self, *args, **kwargs):
        calls.append(getattr(self, "__name__", repr(self)))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ConstexprFunction, "__call__", counting)
    assert triton.cdiv(7, 2) == 4 and calls, "the counter must see a constexpr function call"
    calls.clear()
    trm.plans(*shape, torch.bfloat16)
    triton_grouped.plan(*shape)
    triton_grouped.launch_plan(*shape, 2)
    assert calls == []
