"""Checks the memory planner (rpt_fast.memory) against measurements on CPU.

Why: the planner's activation and ZeRO-3 terms are estimates; this script states their error.
* activations: bytes of the tensors autograd saves in one forward of a frozen T5 (counted once
  per storage with saved-tensor hooks) whose input embeddings (prompt + source) need a gradient,
  vs ``activation_terms`` of the planner.
* ZeRO-3 gathered parameters (``--zero3``): peak bytes of non-persistent backbone parameters that
  are gathered or in flight (ds_status not NOT_AVAILABLE) at any module hook (_train_gathered.py)
  during training steps of a tiny T5 under ``deepspeed.initialize`` on one CPU rank
  (DS_ACCELERATOR=cpu, gloo), vs the planner's term; ``param_dtypes`` lists the dtypes of
  every parameter and partition (fp32 is what the planner assumes).

Usage: python benchmarks/check_memory.py [--json] [--zero3]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from rpt_fast.memory import Setup, activation_terms, backbone_tensors, load_arch, plan  # noqa: E402
from rpt_fast.presets import t5_config  # noqa: E402

ACTIVATION_CASES = [
    # (model, dtype, attention, dropout, batch, source, target, num_tokens)
    ("t5-tiny", "float32", "eager", 0.0, 2, 24, 8, 8),
    ("t5-tiny", "bfloat16", "eager", 0.0, 2, 24, 8, 8),
    ("t5-tiny", "float32", "sdpa", 0.0, 2, 40, 12, 8),
    ("t5-tiny", "bfloat16", "sdpa", 0.0, 3, 40, 12, 8),
    ("t5-small", "bfloat16", "sdpa", 0.0, 2, 56, 8, 8),
    ("t5-small", "bfloat16", "eager", 0.0, 2, 56, 8, 8),
]


def _model(name: str, dtype, attention: str, dropout: float):
    from transformers import T5ForConditionalGeneration

    cfg = t5_config(name, dropout_rate=dropout)
    cfg._attn_implementation = attention
    model = T5ForConditionalGeneration(cfg).to(dtype).train()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def measure_saved_bytes(model, batch: int, source: int, target: int, num_tokens: int) -> int:
    """Bytes of distinct non-parameter storages autograd saves in one forward with loss."""
    d = model.config.d_model
    dtype = next(model.parameters()).dtype
    prompt = torch.randn(num_tokens, d, dtype=dtype, requires_grad=True)
    ids = torch.randint(2, model.config.vocab_size, (batch, source))
    labels = torch.randint(2, model.config.vocab_size, (batch, target))
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        embeds = torch.cat([prompt.expand(batch, -1, -1), model.shared(ids)], dim=1)
        loss = model(inputs_embeds=embeds, labels=labels).loss
    loss.backward()
    return sum(seen.values())


def activation_rows() -> list[dict]:
    rows = []
    for name, dtype, attention, dropout, b, s, t, n in ACTIVATION_CASES:
        torch.manual_seed(0)
        model = _model(name, getattr(torch, dtype), attention, dropout)
        measured = measure_saved_bytes(model, b, s, t, n)
        setup = Setup(model=name, batch_size=b, source_length=s, target_length=t, num_tokens=n,
                      bf16=dtype == "bfloat16", dropout=dropout, attention=attention)
        predicted = activation_terms(load_arch(name), setup)["activations"]
        rows.append({"case": f"{name} {dtype} {attention} B{b} S{s}+{n} T{t}",
                     "measured": measured, "predicted": predicted,
                     "rel_error": predicted / measured - 1})
    return rows


class _PromptedT5(torch.nn.Module):
    """8 trainable prompt rows prepended to a frozen T5's input embeddings; returns the loss."""

    def __init__(self, t5):
        super().__init__()
        self.t5 = t5
        self.prompt = torch.nn.Embedding(8, t5.config.d_model)

    def forward(self, ids, labels):
        p = self.prompt.weight.unsqueeze(0).expand(ids.shape[0], -1, -1)
        embeds = torch.cat([p, self.t5.shared(ids)], dim=1)
        return self.t5(inputs_embeds=embeds, labels=labels).loss


# Prefetching on, so the planner's prefetch term is checked too. The peak once differed between
# machines (212,992 B on an Intel Xeon, 106,496 B on an AMD EPYC): not prefetching, but
# zero.Init(dtype=torch.float32) building bf16 where DeepSpeed's CPU accelerator lacks fp16.
ZERO3_KNOBS = {"max_live_parameters": 30_000, "prefetch_bucket_size": 10_000,
               "param_persistence_threshold": 1_000, "max_reuse_distance": 0}


def zero3_row(steps: int = 3) -> dict:
    """Peak gathered backbone bytes of a tiny T5 under ZeRO-3 on one CPU rank vs the planner."""
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    # One rank: port 0 lets the store bind a port the OS picks, so parallel runs cannot collide.
    for k, v in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                 "MASTER_PORT": "0"}.items():
        os.environ.setdefault(k, v)
    import deepspeed
    from transformers import T5ForConditionalGeneration

    from _train_gathered import GatheredPeak
    from rpt_fast.train.zero3 import zero_init_config

    ds_torch_comm = importlib.import_module("deepspeed.comm.torch")  # not the torch package
    # One rank needs no shared-memory collectives; skip building that C++ op (minutes on 2 cores).
    ds_torch_comm.build_shm_op = lambda: None
    deepspeed.init_distributed(dist_backend="gloo")
    k = ZERO3_KNOBS
    # fp32 from the config, not zero.Init(dtype=torch.float32): DeepSpeed ignores that argument
    # where the accelerator lacks fp16 (AMD EPYC) and built bf16, half the bytes measured here.
    config = zero_init_config({
        "train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 1,
        "zero_allow_untested_optimizer": True,
        "zero_optimization": {
            "stage": 3, "stage3_max_live_parameters": k["max_live_parameters"],
            "stage3_prefetch_bucket_size": k["prefetch_bucket_size"],
            "stage3_param_persistence_threshold": k["param_persistence_threshold"],
            "stage3_max_reuse_distance": k["max_reuse_distance"],
        },
    }, torch.float32)
    torch.manual_seed(0)
    with deepspeed.zero.Init(config_dict_or_path=config):
        wrapper = _PromptedT5(T5ForConditionalGeneration(t5_config("t5-tiny", dropout_rate=0.0)))
    model = wrapper.t5
    for p in model.parameters():
        p.requires_grad_(False)
    opt = torch.optim.AdamW(wrapper.prompt.parameters(), lr=1e-3)
    engine, *_ = deepspeed.initialize(model=wrapper, optimizer=opt, config=config)
    with GatheredPeak(model) as gathered:
        for _ in range(steps):
            ids = torch.randint(2, 300, (2, 16))
            labels = torch.randint(2, 300, (2, 6))
            engine.backward(engine(ids, labels))
            engine.step()
    setup = Setup(model="t5-tiny", batch_size=2, source_length=16, target_length=6, num_tokens=8,
                  bf16=False, zero_stage=3, **k)
    predicted = plan(setup)["gpu_terms"]["backbone gathered (live)"]
    measured = gathered.peak_bytes
    persistent = sum(n * c for _, n, c in backbone_tensors(load_arch("t5-tiny"))
                     if n <= k["param_persistence_threshold"])
    measured_persistent = gathered.persistent_numel
    return {"case": "t5-tiny fp32 ZeRO-3 gathered, " + ", ".join(f"{a}={b}" for a, b in k.items()),
            "measured": measured, "predicted": predicted, "rel_error": predicted / measured - 1,
            "persistent_numel_measured": measured_persistent,
            "persistent_numel_predicted": persistent,
            "param_dtypes": sorted({str(t.dtype) for p in wrapper.parameters() for t in (p, p.ds_tensor)})}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--zero3", action="store_true", help="also run the ZeRO-3 check (deepspeed)")
    ap.add_argument("--no-activations", action="store_true")
    args = ap.parse_args(argv)
    # DeepSpeed prints its own lines to stdout: keep stdout for the results alone.
    with contextlib.redirect_stdout(sys.stderr):
        rows = [] if args.no_activations else activation_rows()
        if args.zero3:
            rows.append(zero3_row())
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(f"{r['case']:<70s} measured {r['measured']:>12,d} B  predicted "
                  f"{r['predicted']:>14,.0f} B  error {r['rel_error']:+.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
