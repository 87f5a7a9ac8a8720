"""The planner-chosen configuration (``--zero-stage auto`` / ``--offload-param auto``) and the
DeepSpeed settings derived from the model's sizes: precision, buffers, ZeRO-3 limits."""

import dataclasses
import json

import pytest

from rpt_fast.memory import GIB, plan
from rpt_fast.train import autoplan
from rpt_fast.train.config import TrainConfig
from rpt_fast.train.ds_config import build_ds_config


def _need(cfg, world, **knobs):
    return autoplan._predicted(dataclasses.replace(cfg, **knobs), world, autoplan.model_sizes(cfg), True)


def _resolve(cfg, world, memory, gpu=None):
    # --gpu-memory names the memory (no GPU here); the step times are an H100's unless gpu says
    cfg = dataclasses.replace(cfg, gpu_memory=f"{memory / GIB:.6f}GiB").validate()
    return autoplan.resolve(cfg, world, None, gpu=gpu)


def _knobs(cfg):
    return cfg.zero_stage, cfg.offload_param, cfg.gradient_checkpointing


@pytest.mark.parametrize("gpu", [None, "a100-40gb"])
def test_t5_xxl_on_40gb_recomputes_instead_of_offloading(gpu):
    # issue 24: offload streams the 22 GB backbone over PCIe twice a step; checkpointing
    # recomputes one forward. Both fit 40 GB; the faster is taken, and says why.
    cfg = TrainConfig(model="t5-xxl", bf16=True)
    chosen, reason = _resolve(cfg, 1, 40 * GIB, gpu)
    assert _knobs(chosen) == (0, "none", True), reason
    assert reason.startswith("ZeRO stage 0 (no partitioning) + gradient checkpointing: predicted 26.0 GiB per rank fits")
    assert "per step on NVIDIA" in reason and "faster but too large: ZeRO stage 0 (no partitioning) needs 42.4 GiB" in reason


def test_eight_nvlinked_gpus_gather_instead_of_recomputing():
    # T5-XXL on 8 A100-40GB: ZeRO-3's all-gathers over NVLink (about 0.17 s) cost less than
    # recomputing a forward (0.26 s); the replicated backbone alone does not fit
    cfg = TrainConfig(model="t5-xxl", bf16=True, batch_size=64)
    chosen, reason = _resolve(cfg, 8, 40 * GIB, "a100-40gb")
    assert _knobs(chosen) == (3, "none", False), reason


def test_auto_takes_the_fastest_setting_that_fits_as_memory_shrinks():
    cfg = TrainConfig(model="t5-xl", bf16=True, max_input_length=512, batch_size=16)
    expected = {80: (0, "none", False), 16: (0, "none", True), 8: (3, "none", True), 4: (3, "cpu", True)}
    for gib, knobs in expected.items():
        chosen, reason = _resolve(cfg, 2, gib * GIB)
        assert _knobs(chosen) == knobs, reason
        assert "fits in" in reason and "override" in reason
    # --gpu-memory alone (planning on a machine without the GPU) judges the GPU side too
    on_login_node = autoplan.resolve(dataclasses.replace(cfg, gpu_memory="8GB"), 2, None)[0]
    assert _knobs(on_login_node) == (3, "none", True)
    ckpt = _need(cfg, 2, zero_stage=3, offload_param="cpu", gradient_checkpointing=True, max_live_parameters=0)
    chosen, reason = _resolve(cfg, 2, ckpt / 2)  # nothing fits: the one needing least memory, said plainly
    assert _knobs(chosen) == (3, "cpu", True) and "does NOT fit" in reason


def test_one_rank_never_picks_zero3_without_offload_and_explicit_flags_win():
    cfg = TrainConfig(model="t5-small")
    chosen, reason = _resolve(cfg, 1, 1000 * GIB)
    assert _knobs(chosen) == (0, "none", False) and "no partitioning" in reason
    stage0 = _need(cfg, 1, zero_stage=0, offload_param="none")
    chosen, _ = _resolve(cfg, 1, stage0 * 0.99)  # recomputing beats offloading
    assert _knobs(chosen) == (0, "none", True)
    # --zero-stage 3 given: only the offload (and checkpointing) is chosen, and none is preferred
    chosen, _ = _resolve(dataclasses.replace(cfg, zero_stage=3), 1, 1000 * GIB)
    assert _knobs(chosen) == (3, "none", False)
    # --offload-param cpu given: ZeRO-3 follows; --gradient-checkpointing given stays on
    chosen, _ = _resolve(dataclasses.replace(cfg, offload_param="cpu", gradient_checkpointing=True), 1, 1000 * GIB)
    assert _knobs(chosen) == (3, "cpu", True)
    # NVMe is a candidate only with --nvme-path
    assert all(k["offload_param"] != "nvme" for k in autoplan._candidates(cfg, 1))
    assert {"zero_stage": 3, "offload_param": "nvme", "gradient_checkpointing": True} in autoplan._candidates(
        dataclasses.replace(cfg, nvme_path="/tmp"), 1)
    # both given, or no DeepSpeed: nothing chosen, nothing printed
    both = dataclasses.replace(cfg, zero_stage=2, offload_param="none")
    assert autoplan.resolve(both, 1, None) == (both, "")
    plain, reason = autoplan.resolve(dataclasses.replace(cfg, deepspeed=False), 1, None)
    assert (plain.zero_stage, plain.offload_param, reason) == (0, "none", "")


def test_cpu_ranks_share_the_host_memory_where_offload_saves_nothing():
    budget, source = autoplan.device_memory(TrainConfig(), None, local_world_size=4)
    assert 0 < budget and "host RAM / 4" in source
    cfg = TrainConfig(model="t5-xl", max_input_length=512)
    sizes = autoplan.model_sizes(cfg)
    on_host = [autoplan._predicted(dataclasses.replace(cfg, zero_stage=3, offload_param=o), 1, sizes, False)
               for o in ("none", "cpu")]
    assert on_host[0] == on_host[1]


def _ds(world=1, **kw):
    return build_ds_config(TrainConfig(**kw).validate(), world_size=world, pin_memory=False)


def test_bf16_keeps_the_trainable_part_fp32_and_communicates_in_fp32():
    assert _ds(bf16=True, zero_stage=3, offload_param="none")["bf16"]["enabled"] is True
    for stage in (0, 1, 2):  # DeepSpeed's bf16 would cast P and the MLP: the backbone is built bf16
        assert _ds(bf16=True, zero_stage=stage, offload_param="none")["bf16"]["enabled"] is False
    assert _ds(bf16=True, zero_stage=3, offload_param="none")["communication_data_type"] == "fp32"


def test_fp16_from_a_user_json_is_refused(tmp_path):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"fp16": {"enabled": True}}))
    with pytest.raises(ValueError, match="deepspeed_config: fp16 is not supported.*use --bf16"):
        _ds(deepspeed_config=str(path), zero_stage=3, offload_param="none")


def test_buffers_come_from_the_model_sizes(tmp_path):
    sizes = autoplan.model_sizes(TrainConfig(model="t5-xxl"))
    assert sizes.largest_tensor == 32128 * 4096 and sizes.trainable == 100 * 4096 + 2 * 800 * 4096 + 800 + 3 * 4096
    zero = _ds(model="t5-xxl", zero_stage=3, offload_param="nvme", nvme_path=str(tmp_path))["zero_optimization"]
    assert zero["reduce_bucket_size"] == sizes.trainable  # not DeepSpeed's 5e8 elements
    # one rank holds the whole 131.6M-element embedding: the swap buffer must take it
    assert zero["offload_param"]["buffer_size"] >= sizes.largest_tensor
    assert _ds(world=8, batch_size=8, model="t5-xxl", zero_stage=3, offload_param="nvme",
               nvme_path=str(tmp_path))["zero_optimization"]["offload_param"]["buffer_size"] == 100_000_000
    assert zero["stage3_max_live_parameters"] >= 2 * sizes.largest_tensor  # the embedding and more
    assert zero["stage3_prefetch_bucket_size"] >= sizes.layer_params  # a whole block ahead
    ds = _ds(model="t5-xxl", zero_stage=3, offload_param="nvme", nvme_path=str(tmp_path))
    assert ds["aio"]["block_size"] == 1 << 20
    # the planner models both: one bucket's fp32 bytes on the GPU, the swap buffers on the host
    setup = autoplan.planner_setup(TrainConfig(model="t5-xxl", bf16=True, zero_stage=3, offload_param="nvme",
                                               nvme_path=str(tmp_path)), 1)
    p = plan(setup)
    assert p["gpu_terms"]["gradient reduce bucket (fp32)"] == 4 * sizes.trainable
    assert p["host_terms"]["nvme swap buffers (pinned)"] == 5 * zero["offload_param"]["buffer_size"] * 2


def test_batch_must_divide_over_ranks_and_accumulation():
    with pytest.raises(ValueError, match="global batch 8 must split evenly over 16 ranks x 1 .* multiples of 16"):
        _ds(world=16, zero_stage=3, offload_param="none")


def test_zero3_live_limits_grow_with_the_world_size_and_the_planned_peak_fits():
    # T5-XXL with parameter offload on 16 GB GPUs: more ranks, less of the batch and of the
    # optimizer state per rank, more memory left to prefetch into
    cfg = TrainConfig(model="t5-xxl", bf16=True, zero_stage=3, offload_param="cpu", batch_size=16,
                      max_input_length=256, gpu_memory="16GB").validate()
    sizes = autoplan.model_sizes(cfg)
    lives = []
    for world in (4, 8, 16):
        resolved, reason = autoplan.resolve(cfg, world, None)
        live = resolved.max_live_parameters
        assert "gathered parameters live" in reason
        p = plan(autoplan.planner_setup(resolved, world))
        assert 0.99 * 16 * GIB < p["gpu_total"] <= 16 * GIB  # fits, and the room is used
        zero = build_ds_config(resolved, world, pin_memory=False)["zero_optimization"]
        assert zero["stage3_max_live_parameters"] == p["setup"]["max_live_parameters"] == live
        assert zero["stage3_prefetch_bucket_size"] == p["setup"]["prefetch_bucket_size"] == live // 2
        assert zero["stage3_max_reuse_distance"] == p["setup"]["max_reuse_distance"] == live // 2
        assert live // 2 >= sizes.layer_params  # a whole block prefetched
        lives.append(live)
    assert lives[0] < lives[1] < lives[2]


def test_zero3_live_limits_are_clamped_and_an_explicit_limit_wins():
    cfg = TrainConfig(model="t5-xl", bf16=True, zero_stage=3, offload_param="none", max_input_length=256)
    sizes = autoplan.model_sizes(cfg)
    from rpt_fast.memory import load_arch, nonpersistent_numel

    largest, total = nonpersistent_numel(load_arch("t5-xl"), autoplan.PERSISTENCE_THRESHOLD)
    roomy, _ = _resolve(cfg, 8, 1000 * GIB)
    assert roomy.max_live_parameters == total - largest  # everything gathered: nothing more to gain
    tight, reason = _resolve(cfg, 8, 2 * GIB)  # not even one block of prefetch fits
    assert tight.max_live_parameters == 2 * sizes.layer_params
    assert plan(autoplan.planner_setup(tight, 8))["gpu_total"] > 2 * GIB
    given = dataclasses.replace(cfg, max_live_parameters=12345)
    assert autoplan.resolve(given, 8, None) == (given, "")
    # the planned limit depends on the world size the run was started with
    assert _resolve(cfg, 2, 10 * GIB)[0].max_live_parameters < _resolve(cfg, 8, 10 * GIB)[0].max_live_parameters
