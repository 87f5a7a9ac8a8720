"""Decoder-only language models as the memory planner (:mod:`rpt_fast.memory`) and the
step-time model (:mod:`rpt_fast.step_time`) see them: the parameter tensors Hugging Face builds
for ``...ForCausalLM`` of the families below, the tensors one prompt-tuning step saves for
backward, and the step's FLOPs. Pure arithmetic on the config (read through transformers'
config class of the family, so its defaults apply as they do when the model is built).

Families: Llama 2/3.x (grouped-query attention, tied or untied head, optional biases), Mistral,
Qwen2/2.5 (q/k/v biases), Gemma (tied, head_dim, RMSNorm weights as 1 + w, the sqrt(d)
embedding normaliser), Gemma 2 (four norms a layer, attention and final logit softcapping,
eager attention only), GPT-NeoX/Pythia (fused qkv, partial rotary, parallel residual,
LayerNorm), GPT-2 (fused qkv, learned positions, tied, tanh GELU written out in Python).

One prompt-tuning step (rpt_fast.prompt): P' (num_tokens), the input (source length) and the
target (target length) are one causal sequence of N = num_tokens + source + target tokens per
example, padded to that length (so an attention mask is present); the labels are -100 except on
the target, but transformers computes the logits and fp32 log-probs of every position. e = 2
bytes under bf16, 4 under fp32; d hidden, H query and G key-value heads of h_d, I intermediate,
V vocabulary.

Parameters (exact; tests check them against sum(p.numel()) of the transformers model of the
same config): the embedding (V d), the head unless tied, per layer q (d H h_d), k and v
(d G h_d each), o (H h_d d), biases as the family has them, the MLP (3 d I gated, 2 d I plain),
the norms (d each, LayerNorms 2 d), the final norm, GPT-2's position table.

Activations (ESTIMATE of the saved-for-backward tensors with frozen weights, whose linear inputs
are not saved; checked on CPU against saved-tensor hooks, benchmarks/check_memory.py). P' at
the first positions needs a gradient and attention carries it to every later position, so every
layer saves, per token,
    norms: RMSNorm 4 d + 4 (an fp32 copy of its input and 1/rms), LayerNorm e d + 8 (input,
           fp32 mean and 1/std); NeoX's parallel residual reads one input with both norms
    attention, "eager": q, and k and v repeated to all H heads (3 H h_d e), the fp32 softmax
           (4 H N) and its cast to the model dtype (e H N; none in fp32, GPT-2 takes the softmax
           in the model dtype); Gemma 2's tanh softcapping another e H N; attention dropout
           p > 0 a mask and the dropped probs (1 + e) H N
    attention, "sdpa": q, k and v repeated (the padding mask keeps transformers from passing
           GQA to the kernel; with one key-value head the repeat is a view: h_d e each), the
           output (4 H h_d e), the log-sum-exp (4 H) and the additive mask (e N); GPT-2's query
           keeps its fused qkv output alive and the key-value cache copies k and v: 6 d e
    MLP: the activation's saved inputs (1 I e for SiLU, GELU and tanh GELU, 4 I e for GPT-2's
         gelu_new), in gated MLPs also the activation's output and the up projection (+2 I e)
    dropout p > 0 after attention and MLP (GPT-2, NeoX): masks, 2 d bytes
and once per sequence: the final norm, the rotary cos and sin (2 N rotary_dim e, shared), the
loss's fp32 log-probs and targets (4 V + 8 per token), Gemma 2's final softcapping (e V), GPT-2's
and NeoX's embedding dropout mask (d). Gradient checkpointing keeps each layer's input (e d per token per
layer) plus one layer's activations while it is recomputed. Backward working memory (ESTIMATE):
twice one layer's activations plus the logits' gradient in fp32 and in the model dtype,
(4 + e) V per token (the forward's peak at the loss holds as much: the logits and their fp32
copy).

FLOPs: see :meth:`DecoderArch.step_flops` (exact for these families under eager attention:
tests count them with torch's FlopCounterMode).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .plan_setup import Setup

FAMILIES = ("llama", "mistral", "qwen2", "gemma", "gemma2", "gpt_neox", "gpt2")
# Elements an activation saves per input element: torch's fused kernels keep the input only,
# GPT-2's gelu_new (NewGELUActivation) four tensors of the input's size; an activation not
# listed is assumed to be such a Python composite.
_ACTIVATION_SAVES = {"silu": 1, "swish": 1, "gelu": 1, "gelu_pytorch_tanh": 1, "relu": 1, "gelu_new": 4}


@dataclass(frozen=True)
class DecoderArch:
    """The dimensions and the per-family details the planner needs of a decoder-only model."""

    family: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    tied: bool
    activation: str
    qkv_bias: bool = False  # q, k, v projections have biases
    o_bias: bool = False
    mlp_bias: bool = False
    gated: bool = True  # gate, up, down (else up, down)
    layer_norm: bool = False  # LayerNorm with bias (else RMSNorm)
    norms_per_layer: int = 2
    parallel_residual: bool = False  # NeoX: both norms read the layer's input
    rotary_dim: int = 0  # 0: learned positions (GPT-2)
    positions: int = 0  # GPT-2's learned position table
    attn_softcap: bool = False
    final_softcap: bool = False
    sdpa: bool = True  # transformers offers sdpa for the family
    residual_dropout: bool = False  # dropout after attention and MLP (GPT-2, NeoX)
    dropout: float = 0.0  # the config's largest dropout rate

    @classmethod
    def from_config(cls, raw: dict, model: str) -> "DecoderArch":
        """From a ``config.json``'s content (``model`` names it in errors)."""
        try:
            from transformers import AutoConfig
        except ImportError as exc:  # pragma: no cover - rpt-memory is installed with transformers
            raise ValueError(f"model: planning {model!r} ({raw['model_type']}) needs transformers") from exc
        family = raw["model_type"]
        c = AutoConfig.for_model(family, **{k: v for k, v in raw.items() if k != "model_type"})
        if family == "gpt2":
            d, heads = c.n_embd, c.n_head
            return cls(family, c.vocab_size, d, c.n_inner or 4 * d, c.n_layer, heads, heads, d // heads,
                       tied=bool(c.tie_word_embeddings), activation=c.activation_function, qkv_bias=True,
                       o_bias=True, mlp_bias=True,
                       gated=False, layer_norm=True, positions=c.n_positions, sdpa=True, residual_dropout=True,
                       dropout=max(c.attn_pdrop, c.resid_pdrop, c.embd_pdrop))
        d, heads = c.hidden_size, c.num_attention_heads
        kv = getattr(c, "num_key_value_heads", None) or heads
        head_dim = getattr(c, "head_dim", None) or d // heads
        common = dict(family=family, vocab_size=c.vocab_size, hidden_size=d, intermediate_size=c.intermediate_size,
                      num_layers=c.num_hidden_layers, num_heads=heads, num_kv_heads=kv, head_dim=head_dim,
                      tied=bool(c.tie_word_embeddings))
        if family == "gpt_neox":
            rope = getattr(c, "rope_parameters", None) or {}
            factor = rope.get("partial_rotary_factor", getattr(c, "rotary_pct", 1.0))
            return cls(**common, activation=c.hidden_act, qkv_bias=c.attention_bias, o_bias=c.attention_bias,
                       mlp_bias=True, gated=False, layer_norm=True, parallel_residual=c.use_parallel_residual,
                       rotary_dim=int(head_dim * factor), residual_dropout=True,
                       dropout=max(c.attention_dropout, c.hidden_dropout))
        # The flags each family's modeling code reads (Mistral none; Qwen2 q/k/v biases always).
        bias = family in ("llama", "gemma", "gemma2") and bool(c.attention_bias)
        return cls(**common, activation=getattr(c, "hidden_activation", None) or c.hidden_act,
                   qkv_bias=bias or family == "qwen2", o_bias=bias, mlp_bias=family == "llama" and bool(c.mlp_bias),
                   norms_per_layer=4 if family == "gemma2" else 2, rotary_dim=head_dim,
                   attn_softcap=getattr(c, "attn_logit_softcapping", None) is not None,
                   final_softcap=getattr(c, "final_logit_softcapping", None) is not None,
                   sdpa=family != "gemma2", dropout=c.attention_dropout)

    @property
    def hidden(self) -> int:
        return self.hidden_size

    def _attention_shapes(self) -> tuple[int, int, int]:
        """(q, k, v) output widths."""
        return self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim, self.num_kv_heads * self.head_dim

    def _layer_tensors(self) -> list[tuple[str, int, int]]:
        d, i = self.hidden_size, self.intermediate_size
        q, k, v = self._attention_shapes()
        norm = [("norm", d, self.norms_per_layer * (2 if self.layer_norm else 1))]
        if self.family in ("gpt2", "gpt_neox"):  # one fused qkv matrix
            attn = [("attn", d * (q + k + v), 1), ("attn", q * d, 1)]
            biases = [("bias", q + k + v, 1), ("bias", d, 1)] if self.qkv_bias else []
        else:
            attn = [("attn", d * q, 1), ("attn", d * k, 2), ("attn", q * d, 1)]
            biases = [("bias", q, 1), ("bias", k, 2)] if self.qkv_bias else []
            biases += [("bias", d, 1)] if self.o_bias else []
        mlp = [("mlp", d * i, 3 if self.gated else 2)]
        if self.mlp_bias:
            biases += [("bias", i, 2 if self.gated else 1), ("bias", d, 1)]
        return attn + mlp + norm + biases

    def tensors(self) -> list[tuple[str, int, int]]:
        """(kind, numel, count) of every distinct backbone parameter tensor, as HF builds them."""
        d = self.hidden_size
        out = [("embedding", self.vocab_size * d, 1 if self.tied else 2),
               ("norm", d, 2 if self.layer_norm else 1)]
        if self.positions:
            out.append(("positions", self.positions * d, 1))
        return out + [(k, n, c * self.num_layers) for k, n, c in self._layer_tensors()]

    def layer_params(self) -> int:
        return sum(n * c for _, n, c in self._layer_tensors())

    def _layer_bytes_per_token(self, s: Setup, n: int, e: int, attention: str) -> float:
        d, i, h = self.hidden_size, self.intermediate_size, self.num_heads
        if self.layer_norm:
            norms = (1 if self.parallel_residual else self.norms_per_layer) * e * d + self.norms_per_layer * 8
        else:
            norms = self.norms_per_layer * (4 * d + 4)
        heads = h * self.head_dim  # k and v repeated to every query head
        dropped = s.dropout > 0
        if attention == "eager":
            scores = (e if self.family == "gpt2" else 4 + (e if e != 4 else 0)) * h * n
            scores += (e * h * n if self.attn_softcap else 0) + ((1 + e) * h * n if dropped else 0)
            attn = 3 * heads * e + scores
        elif self.family == "gpt2":
            attn = 6 * d * e + 4 * h + e * n
        else:  # with one key-value head, repeating k and v to every head is a view
            kv = self.head_dim if self.num_kv_heads == 1 else heads
            attn = (2 * heads + 2 * kv) * e + 4 * h + e * n
        act = _ACTIVATION_SAVES.get(self.activation, 4)
        mlp = (act + 2 if self.gated else act) * i * e
        masks = 2 * d if dropped and self.residual_dropout else 0
        return norms + attn + mlp + masks

    def attention_kind(self, s: Setup) -> str:
        """What runs: sdpa as asked where transformers offers it (not for Gemma 2), else eager."""
        return s.attention if self.sdpa else "eager"

    def activations(self, s: Setup) -> dict[str, float]:
        """Saved activations of one micro-batch in bytes, and backward's working memory."""
        e = 2 if s.bf16 else 4
        n = s.num_tokens + s.source_length + s.target_length
        micro = math.ceil(s.batch_size / s.gradient_accumulation)
        d, v = self.hidden_size, self.vocab_size
        layer = micro * n * self._layer_bytes_per_token(s, n, e, self.attention_kind(s))
        final_norm = e * d + 8 if self.layer_norm else 4 * d + 4
        per_token = final_norm + 4 * v + 8 + (e * v if self.final_softcap else 0)
        per_token += d if s.dropout > 0 and self.residual_dropout else 0  # embedding dropout
        once = micro * n * per_token + 2 * n * self.rotary_dim * e
        layers = self.num_layers * layer
        if s.grad_checkpointing:
            layers = micro * n * e * d * self.num_layers + layer
        workspace = 2 * layer + micro * n * (4 + e) * v
        return {"activations": layers + once, "backward_workspace": workspace}

    def step_flops(self, s: Setup) -> dict[str, float]:
        """FLOPs of one optimizer step: forward, backward of the activations only, recompute.

        Per token and layer 2 x the projections' weights (q, k, v, o, the MLP; biases are not
        counted), the attention matmuls over all N keys (4 N H h_d; causal masking does not skip
        work in eager attention), the lm_head over every position (2 V d). Backward: each
        linear's dX (its forward's FLOPs), the attention matmuls twice (2.5x under sdpa, whose
        fused kernels recompute Q K^T); every position needs a gradient. Recompute: each layer's
        forward again without its last matmul (the MLP's down projection, which nothing saves;
        Gemma 2's post-feedforward norm saves it, so there the whole layer)."""
        micro = -(-s.batch_size // s.gradient_accumulation)
        n = s.num_tokens + s.source_length + s.target_length
        tokens = micro * n
        d, i = self.hidden_size, self.intermediate_size
        q, k, v = self._attention_shapes()
        mlp = (3 if self.gated else 2) * d * i
        linear = 2 * tokens * (d * (q + k + v) + q * d + mlp) * self.num_layers
        attention = 4 * tokens * n * q * self.num_layers
        head = 2 * tokens * self.vocab_size * d
        r = 2.5 if self.attention_kind(s) == "sdpa" else 2.0
        recompute = 0.0
        if s.grad_checkpointing:
            last = 0 if self.family == "gemma2" else 2 * tokens * i * d * self.num_layers
            recompute = linear + attention - last
        steps = s.gradient_accumulation
        return {"forward": steps * (linear + attention + head),
                "backward": steps * (linear + r * attention + head), "recompute": steps * recompute}
