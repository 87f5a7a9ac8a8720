"""DeepSpeed ZeRO-3 (with parameter offload) trains exactly like plain PyTorch: same losses,
same prompt, with 1 rank and with 2 ranks through the ``deepspeed`` launcher; and ZeRO-3
really partitions the frozen backbone. The prompt encoder runs the fused Triton kernels (in the
interpreter on CPU), so gradients reaching P and the MLP under ZeRO-3 are checked too."""

import json
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "train_scripts"))
import harness  # noqa: E402

# No dropout: two ranks draw other dropout masks than one process over the same batch.
PARITY = [*harness.SMALL, "--max-steps", "5", "--eval-interval", "0", "--backbone-dropout", "0",
          "--backend", "triton", "--seed", "7"]
pytestmark = pytest.mark.timeout(420)


@pytest.fixture(scope="module")
def pytorch_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("pytorch"))
    harness.train("--no-deepspeed", "--output-dir", out, *PARITY)
    return out


def _assert_same_training(out, reference):
    ref_losses = harness.losses(reference)
    assert len(ref_losses) == 5 and ref_losses[-1] < ref_losses[0]  # it trains at all
    torch.testing.assert_close(torch.tensor(harness.losses(out)), torch.tensor(ref_losses), rtol=1e-5, atol=1e-5)
    trained, expected = harness.prompt(out), harness.prompt(reference)
    torch.testing.assert_close(trained, expected, rtol=1e-5, atol=2e-5)


def _probe(out: str, rank: int = 0) -> dict:
    with open(os.path.join(out, f"probe-rank{rank}.json")) as handle:
        return json.load(handle)


def _assert_fused_ran(probe: dict, backend: str) -> None:
    calls = probe["calls"][backend]
    assert calls["residual_mlp_forward"] > 0 and calls["residual_mlp_backward"] > 0, probe["calls"]


def test_zero3_offload_single_process_matches_pytorch(pytorch_run, tmp_path):
    out = str(tmp_path / "zero3")
    script = os.path.join(harness.SCRIPTS, "zero3_probe.py")
    harness.run([sys.executable, script, "--zero-stage", "3", "--offload-param", "cpu",
                 "--output-dir", out, *PARITY], timeout=240)
    _assert_same_training(out, pytorch_run)
    _assert_fused_ran(_probe(out), "triton")
    assert harness.summary(out)["mode"] == "deepspeed zero-3"


def test_zero3_native_auto_backend_matches_pytorch(tmp_path):
    """``--backend auto`` on CPU is the native extension: under ZeRO-3 with offload it runs (no
    eager fallback) and trains as without DeepSpeed."""
    native = [a if a != "triton" else "auto" for a in PARITY]
    reference, out = str(tmp_path / "plain"), str(tmp_path / "zero3")
    harness.train("--no-deepspeed", "--output-dir", reference, *native)
    script = os.path.join(harness.SCRIPTS, "zero3_probe.py")
    harness.run([sys.executable, script, "--zero-stage", "3", "--offload-param", "cpu",
                 "--output-dir", out, *native], timeout=240)
    _assert_same_training(out, reference)
    _assert_fused_ran(_probe(out), "native")


def test_zero3_two_ranks_partition_the_backbone_and_match_pytorch(pytorch_run, tmp_path):
    out = str(tmp_path / "zero3x2")
    # Partition every parameter, however small, and keep nothing gathered ahead of use.
    tight = tmp_path / "ds.json"
    tight.write_text(json.dumps({"zero_optimization": {
        "stage3_param_persistence_threshold": 0, "stage3_max_live_parameters": 1000,
        "stage3_prefetch_bucket_size": 0, "stage3_max_reuse_distance": 0}}))
    script = os.path.join(harness.SCRIPTS, "zero3_probe.py")
    harness.launch(2, script, "--offload-param", "cpu", "--deepspeed-config", str(tight), "--output-dir", out, *PARITY)
    _assert_same_training(out, pytorch_run)
    for rank in range(2):
        probe = _probe(out, rank)
        _assert_fused_ran(probe, "triton")
        assert probe["world_size"] == 2
        assert 0.45 < probe["stored"] / probe["total"] < 0.55, probe  # each rank holds about half
        for phase in ("peak_forward", "peak_backward"):
            assert 0 < probe[phase] < 0.5 * probe["total"], probe  # never the whole backbone at once
