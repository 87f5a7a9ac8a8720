"""ZeRO-3 partitions every parameter in the dtype the run asks for even where DeepSpeed's
accelerator reports no fp16 support (CPUs without AVX512-FP16, such as AMD EPYC): there
``zero.Init(dtype=...)`` drops its dtype and builds bf16 (``Init._set_dtype``'s operator
precedence), so nothing may rely on that argument. Every run here goes through
``no_fp16.py``, which makes any machine report no fp16 support."""

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "train_scripts"))
import harness  # noqa: E402

NO_FP16 = os.path.join(harness.SCRIPTS, "no_fp16.py")
FP32, BF16 = "torch.float32", "torch.bfloat16"
pytestmark = pytest.mark.timeout(300)


def _probe(tmp_path, settings: str, bf16: bool, *args: str, timeout: float = 280) -> dict:
    out = tmp_path / "probe.json"
    harness.run([sys.executable, NO_FP16, os.path.join(harness.SCRIPTS, "precision_probe.py"), str(out), settings,
                 *(["--bf16"] if bf16 else []), "--output-dir", str(tmp_path / "runs"), "--eval-interval", "0",
                 "--backend", "eager", *harness.SMALL, *args], timeout=timeout)
    return json.loads(out.read_text())


def _assert_dtypes(results: dict, bf16: bool) -> None:
    """P and the MLP exact fp32 always (parameters and partitions); the backbone fp32, or bf16
    under ``--bf16``, in every parameter and partition."""
    for setting, r in results.items():
        assert r["trainable"] == r["trainable_stored"] == [FP32], (setting, r)
        assert r["backbone_all"] == [BF16 if bf16 else FP32], (setting, r)
        assert r["changed"] and r["loss"] == r["loss"], (setting, r)  # it stepped, loss not NaN


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_rpt_train_zero3_partitions_in_the_asked_dtype_without_fp16_support(tmp_path, bf16):
    _assert_dtypes(_probe(tmp_path, "3,3/cpu", bf16), bf16)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_rpt_train_nvme_offload_partitions_in_the_asked_dtype_without_fp16_support(tmp_path, bf16):
    if not harness.async_io_builds():
        pytest.skip("DeepSpeed's async_io op cannot be built here (no libaio headers): NVMe offload is untestable")
    # Bottleneck 8192: MLP partitions big enough for the NVMe swapper (asserted below), so the
    # trainables' dtype is the one partition_trainables_off_nvme chose, not the swap buffers'.
    results = _probe(tmp_path, "3/nvme", bf16, "--nvme-path", str(tmp_path / "nvme"), "--bottleneck", "8192",
                     timeout=580)  # the first NVMe run builds async_io (minutes)
    assert results["3/nvme"]["nvme_swaps_largest_trainable"] is True
    _assert_dtypes(results, bf16)


def test_check_memory_zero3_measures_fp32_without_fp16_support():
    check = os.path.join(harness.REPO, "benchmarks", "check_memory.py")
    out = harness.run([sys.executable, NO_FP16, check, "--zero3", "--no-activations", "--json"], timeout=280)
    rows = json.loads(out.stdout)
    assert len(rows) == 2, rows  # t5-tiny and tiny-llama
    for row in rows:
        assert row.get("param_dtypes") == [FP32], row
        assert abs(row["rel_error"]) < 0.10, row  # bf16 partitions measured half the planner's bytes


def test_zero_init_config_sets_the_precision_sections_on_a_copy():
    import torch

    from rpt_fast.train.zero3 import zero_init_config

    user = {"bf16": {"enabled": True}, "zero_optimization": {"stage": 3}}
    fp32 = zero_init_config(user, torch.float32)
    assert fp32["bf16"] == {"enabled": False} and fp32["fp16"] == {"enabled": False}
    assert user == {"bf16": {"enabled": True}, "zero_optimization": {"stage": 3}}  # untouched
    assert zero_init_config({"bfloat16": {"enabled": False}}, torch.bfloat16)["bf16"] == {"enabled": True}
    with pytest.raises(ValueError, match="dtype: expected torch.float32 or torch.bfloat16, got torch.float16"):
        zero_init_config(user, torch.float16)
