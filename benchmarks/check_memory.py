"""Checks the memory planner (rpt_fast.memory) against measurements on CPU.

Why: the planner's activation and ZeRO-3 terms are estimates; this script states their error.
* activations: bytes of the tensors autograd saves in one forward of a frozen backbone (counted
  once per storage with saved-tensor hooks) whose input embeddings need a gradient: T5 (prompt +
  source into the encoder) and the decoder-only families (prompt + source + target in one
  sequence, one example right-padded, loss on the target), vs ``activation_terms`` of the
  planner. The cases cover every family and attention, and each term of the planner dominates
  at least one case (the eager attention scores, the loss's log-probs, the MLP, the norms, sdpa's
  q/k/v/out), so a slip in any term shows. No dropout: on CPU its masks are in the model dtype,
  on CUDA (what the planner models) 1 byte.
* ZeRO-3 gathered parameters (``--zero3``): peak bytes of non-persistent backbone parameters that
  are gathered or in flight (ds_status not NOT_AVAILABLE) at any module hook (_train_gathered.py)
  during training steps of a tiny model under ``deepspeed.initialize`` on one CPU rank
  (DS_ACCELERATOR=cpu, gloo), vs the planner's term; t5-tiny and tiny-llama. ``param_dtypes`` lists
  the dtypes of every parameter and partition (fp32 is what the planner assumes).

Usage: python benchmarks/check_memory.py [--json] [--zero3] [--no-activations]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import sys
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from rpt_fast.memory import Setup, activation_terms, arch_from_config, backbone_tensors, load_arch, plan  # noqa: E402
from rpt_fast.presets import PRESETS, T5_PRESETS, preset_config, preset_dict, t5_config  # noqa: E402

_DROPOUTS = ("dropout_rate", "attention_dropout", "hidden_dropout", "attn_pdrop", "resid_pdrop", "embd_pdrop")


@dataclass
class Case:
    """One activation measurement: ``model`` a preset (``config`` overrides its config) or a
    model_type (``config`` is its config); ``dominant``: the planner's largest term here."""

    model: str
    dtype: str
    attention: str
    batch: int
    source: int
    target: int
    num_tokens: int
    config: dict = field(default_factory=dict)
    dominant: str = ""

    def raw_config(self) -> dict:
        """The config.json content, without dropout."""
        base = preset_dict(self.model) if self.model in PRESETS else {"model_type": self.model}
        raw = {**base, **self.config}
        return {**raw, **{k: 0.0 for k in _DROPOUTS if k in raw or k in _family_dropouts(raw)}}

    @property
    def label(self) -> str:
        shape = " (shape changed)" if self.config and self.model in PRESETS else ""
        return (f"{self.model}{shape} {self.dtype} {self.attention} B{self.batch} S{self.source}+{self.num_tokens} "
                f"T{self.target}{' [' + self.dominant + ' dominate]' if self.dominant else ''}")


def _family_dropouts(raw: dict) -> tuple:
    from transformers import AutoConfig

    config = AutoConfig.for_model(raw["model_type"])
    return tuple(k for k in _DROPOUTS if hasattr(config, k))


# Small shapes that make one term of the planner the largest; the rest of the config as the preset.
_SCORES = {"d_model": 32, "d_ff": 32, "num_heads": 16, "d_kv": 4, "vocab_size": 64}
_LLAMA_SCORES = {"hidden_size": 32, "intermediate_size": 32, "num_attention_heads": 16, "num_key_value_heads": 4,
                 "head_dim": 4, "vocab_size": 64}
_GPT2 = {"n_embd": 32, "n_layer": 2, "n_head": 4, "n_inner": 512, "vocab_size": 64, "n_positions": 64}
_NEOX = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
         "vocab_size": 384, "max_position_embeddings": 256}

ACTIVATION_CASES = [
    Case("t5-tiny", "float32", "eager", 2, 24, 8, 8),
    Case("t5-tiny", "bfloat16", "eager", 2, 24, 8, 8),
    Case("t5-tiny", "float32", "sdpa", 2, 40, 12, 8),
    Case("t5-tiny", "bfloat16", "sdpa", 3, 40, 12, 8),
    Case("t5-small", "bfloat16", "sdpa", 2, 56, 8, 8),
    Case("t5-small", "bfloat16", "eager", 2, 56, 8, 8),
    Case("t5-tiny", "float32", "eager", 2, 120, 4, 8, _SCORES, "eager attention scores"),
    Case("tiny-llama", "bfloat16", "sdpa", 2, 24, 8, 8),
    Case("tiny-llama", "float32", "eager", 2, 24, 8, 8),
    Case("tiny-llama", "bfloat16", "eager", 2, 120, 4, 4, _LLAMA_SCORES, "eager attention scores"),
    Case("tiny-llama", "bfloat16", "sdpa", 2, 16, 8, 4, {"vocab_size": 4096}, "loss log-probs"),
    Case("tiny-llama", "bfloat16", "sdpa", 2, 16, 8, 4, {"intermediate_size": 2048}, "MLP"),
    Case("tiny-llama", "bfloat16", "eager", 2, 8, 4, 4,
         {"hidden_size": 512, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 8,
          "intermediate_size": 16, "vocab_size": 64}, "RMSNorm fp32 copies"),
    Case("tiny-llama", "float32", "sdpa", 2, 48, 8, 8,
         {"hidden_size": 32, "num_attention_heads": 16, "num_key_value_heads": 2, "head_dim": 16,
          "intermediate_size": 32, "vocab_size": 64}, "sdpa q/k/v/out repeated to all heads"),
    Case("qwen2", "bfloat16", "sdpa", 2, 24, 8, 8, {**_NEOX, "num_key_value_heads": 2}),
    Case("mistral", "bfloat16", "eager", 2, 24, 8, 8, {**_NEOX, "num_key_value_heads": 2}),
    Case("gemma", "bfloat16", "sdpa", 2, 24, 8, 8, {**_NEOX, "head_dim": 32, "num_key_value_heads": 1}),
    Case("gemma2", "bfloat16", "eager", 2, 120, 4, 4,
         {**_NEOX, "hidden_size": 32, "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 8,
          "vocab_size": 64, "query_pre_attn_scalar": 8}, "eager scores with softcapping"),
    Case("gpt_neox", "bfloat16", "sdpa", 2, 24, 8, 8, _NEOX),
    Case("gpt_neox", "float32", "eager", 2, 24, 8, 8, {**_NEOX, "use_parallel_residual": False}),
    Case("gpt2", "float32", "eager", 2, 16, 8, 4, _GPT2, "gelu_new's intermediates"),
    Case("gpt2", "bfloat16", "sdpa", 2, 24, 8, 8, {**_GPT2, "n_inner": 128}),
]


def _model(case: Case):
    """The case's backbone, frozen, without dropout, in training mode."""
    from transformers import AutoConfig, AutoModelForCausalLM, T5ForConditionalGeneration

    raw = case.raw_config()
    config = AutoConfig.for_model(raw.pop("model_type"), **raw)
    config._attn_implementation = case.attention
    build = T5ForConditionalGeneration if config.model_type == "t5" else AutoModelForCausalLM.from_config
    model = build(config).to(getattr(torch, case.dtype)).train()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def measure_saved_bytes(model, batch: int, source: int, target: int, num_tokens: int) -> int:
    """Bytes of distinct non-parameter storages autograd saves in one forward with loss: T5 with
    the prompt before the source in the encoder; a decoder-only model with prompt, source and
    target in one sequence, the first example's last position padded, the loss on the target."""
    config = model.config
    dtype = next(model.parameters()).dtype
    prompt = torch.randn(num_tokens, model.get_input_embeddings().embedding_dim, dtype=dtype, requires_grad=True)
    ids = torch.randint(2, config.vocab_size, (batch, source))
    labels = torch.randint(2, config.vocab_size, (batch, target))
    kwargs = {"labels": labels}
    if not config.is_encoder_decoder:
        ids = torch.cat([ids, labels], dim=1)
        ignored = labels.new_full((batch, num_tokens + source), -100)
        mask = torch.ones(batch, num_tokens + source + target, dtype=torch.long)
        mask[0, -1] = 0
        kwargs = {"labels": torch.cat([ignored, labels], dim=1), "attention_mask": mask}
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        embeds = torch.cat([prompt.expand(batch, -1, -1), model.get_input_embeddings()(ids)], dim=1)
        loss = model(inputs_embeds=embeds, **kwargs).loss
    loss.backward()
    return sum(seen.values())


def activation_row(case: Case) -> dict:
    torch.manual_seed(0)
    measured = measure_saved_bytes(_model(case), case.batch, case.source, case.target, case.num_tokens)
    setup = Setup(model=case.model, batch_size=case.batch, source_length=case.source, target_length=case.target,
                  num_tokens=case.num_tokens, bf16=case.dtype == "bfloat16", dropout=0.0, attention=case.attention)
    predicted = activation_terms(arch_from_config(case.raw_config(), case.model), setup)["activations"]
    return {"case": case.label, "config": case.raw_config(), "measured": measured, "predicted": predicted,
            "rel_error": predicted / measured - 1}


def activation_rows() -> list[dict]:
    return [activation_row(case) for case in ACTIVATION_CASES]


class _Prompted(torch.nn.Module):
    """8 trainable prompt rows prepended to a frozen backbone's input embeddings; returns the loss
    (T5: ``labels`` are the decoder's; decoder-only: ids and labels in one sequence, the loss on
    the labels)."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.prompt = torch.nn.Embedding(8, backbone.get_input_embeddings().embedding_dim)

    def forward(self, ids, labels):
        p = self.prompt.weight.unsqueeze(0).expand(ids.shape[0], -1, -1)
        if not self.backbone.config.is_encoder_decoder:
            ignored = labels.new_full((ids.shape[0], 8 + ids.shape[1]), -100)
            ids, labels = torch.cat([ids, labels], dim=1), torch.cat([ignored, labels], dim=1)
        embeds = torch.cat([p, self.backbone.get_input_embeddings()(ids)], dim=1)
        return self.backbone(inputs_embeds=embeds, labels=labels).loss


def _backbone(name: str):
    """Preset ``name`` without dropout: T5 or the family's causal LM (no padding index: its init
    writes a row of the embedding, which zero.Init has already partitioned away)."""
    from transformers import AutoModelForCausalLM, T5ForConditionalGeneration

    if name in T5_PRESETS:
        return T5ForConditionalGeneration(t5_config(name, dropout_rate=0.0))
    return AutoModelForCausalLM.from_config(preset_config(name, pad_token_id=None))


# Prefetching on, so the planner's prefetch term is checked too. The peak once differed between
# machines (212,992 B on an Intel Xeon, 106,496 B on an AMD EPYC): not prefetching, but
# zero.Init(dtype=torch.float32) building bf16 where DeepSpeed's CPU accelerator lacks fp16.
ZERO3_MODELS = ("t5-tiny", "tiny-llama")
ZERO3_KNOBS = {"max_live_parameters": 30_000, "prefetch_bucket_size": 10_000,
               "param_persistence_threshold": 1_000, "max_reuse_distance": 0}


def zero3_row(name: str = "t5-tiny", steps: int = 3) -> dict:
    """Peak gathered backbone bytes of preset ``name`` (a tiny one) under ZeRO-3 on one CPU rank
    vs the planner."""
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    # One rank: port 0 lets the store bind a port the OS picks, so parallel runs cannot collide.
    for k, v in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                 "MASTER_PORT": "0"}.items():
        os.environ.setdefault(k, v)
    import deepspeed

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
        wrapper = _Prompted(_backbone(name))
    model = wrapper.backbone
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
    setup = Setup(model=name, batch_size=2, source_length=16, target_length=6, num_tokens=8,
                  bf16=False, zero_stage=3, **k)
    predicted = plan(setup)["gpu_terms"]["backbone gathered (live)"]
    measured = gathered.peak_bytes
    persistent = sum(n * c for _, n, c in backbone_tensors(load_arch(name))
                     if n <= k["param_persistence_threshold"])
    measured_persistent = gathered.persistent_numel
    return {"case": f"{name} fp32 ZeRO-3 gathered, " + ", ".join(f"{a}={b}" for a, b in k.items()),
            "measured": measured, "predicted": predicted, "rel_error": predicted / measured - 1,
            "persistent_numel_measured": measured_persistent,
            "persistent_numel_predicted": persistent,
            "param_dtypes": sorted({str(t.dtype) for p in wrapper.parameters() for t in (p, p.ds_tensor)})}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--zero3", action="store_true", help="also run the ZeRO-3 check (deepspeed)")
    ap.add_argument("--no-activations", action="store_true", help="skip the activation check (with --zero3: "
                    "the ZeRO-3 check only)")
    args = ap.parse_args(argv)
    # DeepSpeed prints its own lines to stdout: keep stdout for the results alone.
    with contextlib.redirect_stdout(sys.stderr):
        rows = [] if args.no_activations else activation_rows()
        if args.zero3:
            rows += [zero3_row(name) for name in ZERO3_MODELS]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(f"{r['case']:<80s} measured {r['measured']:>12,d} B  predicted "
                  f"{r['predicted']:>14,.0f} B  error {r['rel_error']:+.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
