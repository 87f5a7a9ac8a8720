"""The step-time model (rpt_fast.step_time): FLOPs counted exactly against torch's FlopCounterMode
on CPU, the transfer terms against their definitions, the device presets."""

import dataclasses

import pytest
import torch

from rpt_fast.memory import Setup, load_arch, nonpersistent_numel
from rpt_fast.presets import t5_config
from rpt_fast.step_time import (
    DEVICES,
    GPUS_PER_NODE,
    NETWORK_BYTES_PER_S,
    NVME_BYTES_PER_S,
    device_for_name,
    format_seconds,
    get_device,
    step_flops,
    step_time,
)


def _counted_flops(model, batch, source, target, num_tokens):
    """(forward, backward) FLOPs torch counts in one step of a frozen T5 with a trainable prompt."""
    from torch.utils.flop_counter import FlopCounterMode

    prompt = torch.randn(num_tokens, model.config.d_model, requires_grad=True)
    ids = torch.randint(2, model.config.vocab_size, (batch, source))
    labels = torch.randint(2, model.config.vocab_size, (batch, target))
    with FlopCounterMode(display=False) as forward:
        embeds = torch.cat([prompt.expand(batch, -1, -1), model.shared(ids)], dim=1)
        loss = model(inputs_embeds=embeds, labels=labels).loss
    with FlopCounterMode(display=False) as backward:
        loss.backward()
    return forward.get_total_flops(), backward.get_total_flops()


@pytest.mark.parametrize("checkpointing", [False, True])
@pytest.mark.parametrize("proj", ["gated-gelu", "relu"])
def test_flops_are_what_torch_counts(tmp_path, proj, checkpointing):
    # Eager attention: torch's counter does not see CPU sdpa's kernel. Backward without weight
    # gradients; with checkpointing the recompute is in the backward's count.
    from transformers import T5ForConditionalGeneration

    config = t5_config("t5-tiny", feed_forward_proj=proj)
    config.save_pretrained(tmp_path)
    config._attn_implementation = "eager"
    model = T5ForConditionalGeneration(config).train()
    model.requires_grad_(False)
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    torch.manual_seed(0)
    forward, backward = _counted_flops(model, 3, 20, 7, 5)
    s = Setup(model=str(tmp_path), batch_size=3, source_length=20, target_length=7, num_tokens=5, bf16=False,
              attention="eager", grad_checkpointing=checkpointing)
    predicted = step_flops(load_arch(str(tmp_path)), s)
    assert predicted["forward"] == forward
    assert predicted["backward"] + predicted["recompute"] == backward
    assert (predicted["recompute"] > 0) == checkpointing


def test_a_step_without_weight_gradients_is_about_two_forwards():
    s = Setup(model="t5-xxl", source_length=256, target_length=16)
    f = step_flops(load_arch("t5-xxl"), s)
    assert 1.0 < f["backward"] / f["forward"] < 1.1  # activations' gradients only, not 2x for dW too
    f = step_flops(load_arch("t5-xxl"), dataclasses.replace(s, grad_checkpointing=True))
    assert 0.75 < f["recompute"] / f["forward"] < 0.9  # one more forward, less the lm_head and each wo


def test_transfer_terms():
    arch, h100 = load_arch("t5-xxl"), DEVICES["h100"]
    n_np = nonpersistent_numel(arch, Setup.param_persistence_threshold)[1]
    one = Setup(model="t5-xxl", zero_stage=3, offload_param="cpu", bf16=True)
    t = step_time(one, arch, h100)
    # the whole partitioned backbone, bf16, over PCIe for forward and for backward
    assert t["bytes"] == {"parameter offload over PCIe": 2 * n_np * 2}
    assert t["terms"]["parameter offload over PCIe"] == 2 * n_np * 2 / h100.pcie
    # four ranks, two micro-batches: each rank copies its quarter in and gathers the rest, twice as often
    t = step_time(dataclasses.replace(one, world_size=4, gradient_accumulation=2, offload_param="nvme"), arch, h100)
    assert t["bytes"]["parameter offload over PCIe"] == t["bytes"]["parameter reads from NVMe"] == 2 * 2 * n_np * 2 / 4
    assert t["terms"]["parameter reads from NVMe"] == t["bytes"]["parameter reads from NVMe"] / NVME_BYTES_PER_S
    assert t["bytes"]["ZeRO-3 all-gathers"] == 2 * 2 * n_np * 2 * 3 / 4
    assert t["terms"]["ZeRO-3 all-gathers"] == t["bytes"]["ZeRO-3 all-gathers"] / h100.interconnect
    assert t["bytes"]["trainable gradient all-reduce"] > 0
    # beyond one node the gathers cross the network
    many = step_time(dataclasses.replace(one, world_size=2 * GPUS_PER_NODE, offload_param="none"), arch, h100)
    assert many["terms"]["ZeRO-3 all-gathers"] == many["bytes"]["ZeRO-3 all-gathers"] / NETWORK_BYTES_PER_S
    # nothing moves for a replicated backbone on one GPU
    assert step_time(dataclasses.replace(one, zero_stage=0, offload_param="none"), arch, h100)["bytes"] == {}


def test_device_presets():
    names = {"NVIDIA H100 80GB HBM3": "h100", "NVIDIA H200": "h200", "NVIDIA A100-SXM4-40GB": "a100-40gb",
             "NVIDIA A100-SXM4-80GB": "a100-80gb", "NVIDIA A100 80GB PCIe": "a100-80gb", "NVIDIA L4": "l4",
             "NVIDIA GeForce RTX 4090": "rtx-4090", "NVIDIA L40S": None, "Tesla V100-SXM2-16GB": None}
    assert {name: device_for_name(name) for name in names} == names
    with pytest.raises(ValueError, match="gpu: expected one of h100, h200"):
        get_device("v100")
    assert [format_seconds(t) for t in (2.345, 0.0456, 7.89e-5)] == ["2.35 s", "45.6 ms", "78.9 us"]
