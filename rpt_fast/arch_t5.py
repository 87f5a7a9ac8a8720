"""T5 as the memory planner (:mod:`rpt_fast.memory`) and the step-time model
(:mod:`rpt_fast.step_time`) see it: the parameter tensors Hugging Face builds for
``T5ForConditionalGeneration``, the tensors one prompt-tuning step saves for backward, and the
step's FLOPs. Pure arithmetic on the config.

e = 2 bytes under bf16, 4 under fp32; B the micro-batch, S' = source length + num_tokens, T the
target length; d, H, d_kv (inner = H d_kv), d_ff, V, L_enc, L_dec from the config.

Parameters (exact; tests check them against real models)
    N_backbone = V d (shared embedding) + V d (lm_head, unless tied: transformers 5 ties T5
                 always, 4.x honours tie_word_embeddings; the installed one decides)
               + L_enc (4 d inner + F + 2 d) + L_dec (8 d inner + F + 3 d) + 2 d
               + 32 H (relative attention buckets, first layer of each stack; UMT5: every layer)
    with F = 3 d d_ff (gated-gelu) or 2 d d_ff (relu).

Activations (ESTIMATE of the saved-for-backward tensors with frozen weights, whose linear
inputs are not saved; checked on CPU against saved-tensor hooks). The gradient flows from the
loss to the prompt at the encoder input, so every encoder layer saves, per token,
    RMSNorm x2: (4 + e if bf16 else 4) d + 4      q, k, v: 3 inner e
    attention, "sdpa": out inner e + 4 H, plus the (B, H, S', S') position bias once per stack;
               "eager": softmax out e H S' per head and key (+ with dropout p: a mask (1 byte)
               and the dropped probs e H S'); transformers 5 takes the softmax in the model dtype
    gated-gelu FF: 6 d_ff e (tanh GELU's intermediates, the gate and the product), relu: 2 d_ff e
    dropout masks (p > 0): 2 d + d_ff bytes
and every decoder layer the same over T tokens with a cross attention (q: inner e per target
token, k, v: 2 inner e per source token; scores over S'), except that the first decoder layer's
self-attention block and the norm before its cross attention save nothing (their input needs no
gradient); position biases (sdpa) are saved once per stack. The loss saves fp32 log-probs,
4 V per target token. Gradient checkpointing keeps e d per token per layer plus one layer's
activations while it is recomputed. Backward working memory (ESTIMATE): twice the largest
layer's activations plus the logits' gradient, 4 B T V.

FLOPs: see :meth:`T5Arch.step_flops` (exact for Hugging Face T5 under eager attention: tests
count them with torch's FlopCounterMode).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .plan_setup import Setup


def _tied(raw: dict) -> bool:
    """Whether lm_head shares the embedding, as the installed transformers decides: 5.x ties T5
    always, whatever ``tie_word_embeddings`` says; 4.x honours it."""
    try:
        from transformers import T5Config
    except ImportError:
        return bool(raw.get("tie_word_embeddings", True))
    return bool(T5Config.from_dict(raw).tie_word_embeddings)


@dataclass(frozen=True)
class T5Arch:
    """The T5 dimensions the planner needs."""

    vocab_size: int
    d_model: int
    d_kv: int
    d_ff: int
    num_heads: int
    num_layers: int
    num_decoder_layers: int
    gated: bool
    tied: bool
    num_buckets: int = 32
    dropout: float = 0.1  # the config's dropout_rate
    bias_every_layer: bool = False  # UMT5: a relative attention bias in every self-attention

    family = "t5"

    @classmethod
    def from_config(cls, raw: dict, model: str) -> "T5Arch":
        """From a ``config.json``'s content (``model`` names it in errors)."""
        missing = [k for k in ("vocab_size", "d_model", "d_ff", "num_heads", "num_layers") if k not in raw]
        if missing:
            raise ValueError(f"model: config of {model!r} lacks {missing}; is it a T5 config?")
        return cls(
            vocab_size=int(raw["vocab_size"]),
            d_model=int(raw["d_model"]),
            d_kv=int(raw.get("d_kv", 64)),
            d_ff=int(raw["d_ff"]),
            num_heads=int(raw["num_heads"]),
            num_layers=int(raw["num_layers"]),
            num_decoder_layers=int(raw.get("num_decoder_layers") or raw["num_layers"]),
            gated=raw.get("feed_forward_proj", "relu").startswith("gated-"),
            tied=_tied(raw),
            num_buckets=int(raw.get("relative_attention_num_buckets", 32)),
            dropout=float(raw.get("dropout_rate", 0.1)),
            bias_every_layer=raw.get("model_type") == "umt5",
        )

    @property
    def inner(self) -> int:
        return self.num_heads * self.d_kv

    @property
    def hidden(self) -> int:
        return self.d_model

    def tensors(self) -> list[tuple[str, int, int]]:
        """(kind, numel, count) of every distinct backbone parameter tensor, as HF builds them."""
        d, i, f = self.d_model, self.inner, self.d_ff
        ff = [("ff", d * f, 3 if self.gated else 2)]
        enc = [("attn", d * i, 4), ("norm", d, 2), *ff]
        dec = [("attn", d * i, 8), ("norm", d, 3), *ff]
        out = [("embedding", self.vocab_size * d, 1 if self.tied else 2), ("norm", d, 2),
               ("bias", self.num_buckets * self.num_heads,
                self.num_layers + self.num_decoder_layers if self.bias_every_layer else 2)]
        out += [(k, n, c * self.num_layers) for k, n, c in enc]
        out += [(k, n, c * self.num_decoder_layers) for k, n, c in dec]
        return out

    def layer_params(self) -> int:
        """Parameters of the largest block (a decoder block: self and cross attention)."""
        d, i = self.d_model, self.inner
        return 8 * d * i + (3 if self.gated else 2) * d * self.d_ff + 3 * d

    def _attention_bytes(self, s: Setup, kv_len: int, e: int) -> float:
        """Per query token: what the score/probability part of one attention saves."""
        if s.attention == "sdpa":
            return self.inner * e + 4 * self.num_heads
        probs = e * self.num_heads * kv_len
        if s.dropout > 0:
            probs += (1 + e) * self.num_heads * kv_len
        return probs

    def activations(self, s: Setup) -> dict[str, float]:
        """Saved activations of one micro-batch in bytes, and backward's working memory."""
        e = 2 if s.bf16 else 4
        src, tgt = s.source_length + s.num_tokens, s.target_length
        micro = math.ceil(s.batch_size / s.gradient_accumulation)
        d, i = self.d_model, self.inner
        norm = (4 + (e if e != 4 else 0)) * d + 4
        ff = (6 if self.gated else 2) * self.d_ff * e
        dropped = s.dropout > 0
        enc_token = (2 * norm + 3 * i * e + self._attention_bytes(s, src, e) + ff
                     + ((2 * d + self.d_ff) if dropped else 0))
        enc_layer = micro * src * enc_token
        # decoder: self-attention block over T, cross attention (q over T, k/v over S'), FF over T
        self_block = norm + 3 * i * e + self._attention_bytes(s, tgt, e) + (d if dropped else 0)
        cross_block = norm + i * e + self._attention_bytes(s, src, e) + (d if dropped else 0)
        ff_block = norm + ff + ((d + self.d_ff) if dropped else 0)
        cross_kv = micro * src * 2 * i * e
        dec_layer = micro * tgt * (self_block + cross_block + ff_block) + cross_kv
        dec_first = dec_layer - micro * tgt * self_block - micro * tgt * norm
        bias = 0.0
        if s.attention == "sdpa":  # the (B, H, q, k) position bias + mask, shared by a stack's layers
            bias = micro * self.num_heads * e * (src * src + tgt * tgt + tgt * src)
        head = micro * src * (norm + (d if dropped else 0)) + micro * tgt * norm
        loss = micro * tgt * 4 * self.vocab_size
        layers = self.num_layers * enc_layer + dec_first + (self.num_decoder_layers - 1) * dec_layer
        if s.grad_checkpointing:
            kept = micro * e * d * (self.num_layers * src + self.num_decoder_layers * tgt)
            layers = kept + max(enc_layer, dec_layer)
        workspace = 2 * max(enc_layer, dec_layer) + micro * tgt * 4 * self.vocab_size
        return {"activations": layers + bias + head + loss, "backward_workspace": workspace}

    def _block_flops(self, s: Setup) -> dict[str, float]:
        """FLOPs of one micro-batch's forward, by part: per encoder layer, per decoder layer (and
        the parts of the first one that need no gradient), the lm_head."""
        micro = -(-s.batch_size // s.gradient_accumulation)
        src, tgt = s.source_length + s.num_tokens, s.target_length  # per example
        d, i, f = self.d_model, self.inner, self.d_ff
        ff_in = (2 if self.gated else 1) * d * f  # wi (wi_0, wi_1 when gated)
        return {k: micro * v for k, v in {
            # q, k, v, o and the feed-forward per source token; Q K^T and P V over the source
            "enc_linear": 2 * src * (4 * d * i + ff_in + f * d), "enc_attention": 4 * i * src * src,
            "enc_last": 2 * src * f * d,  # wo, the block's last matmul
            "dec_self_linear": 2 * tgt * 4 * d * i, "dec_self_attention": 4 * i * tgt * tgt,
            "dec_cross_q": 2 * tgt * d * i,
            # cross o and the feed-forward per target token, cross k and v per source token
            "dec_rest_linear": 2 * tgt * (d * i + ff_in + f * d) + 2 * src * 2 * d * i,
            "dec_cross_attention": 4 * i * tgt * src,
            "dec_last": 2 * tgt * f * d,
            "head": 2 * tgt * self.vocab_size * d,
        }.items()}

    def step_flops(self, s: Setup) -> dict[str, float]:
        """FLOPs of one optimizer step: forward, backward of the activations only, recompute.

        Backward: every linear's dX (its forward's FLOPs) and the attention matmuls' gradients
        (twice their forward; 2.5x under sdpa, whose fused CUDA kernels also recompute Q K^T).
        The first decoder layer reads only the decoder's input embeddings, which need no
        gradient: its self-attention and cross-attention queries get none (nor Q's share of
        Q K^T in eager attention), except under checkpointing, where transformers makes the
        input embeddings require grad. Recompute: each block's forward again, without its last
        matmul (the feed-forward's wo: torch's non-reentrant checkpoint stops once the tensors
        backward needs are back)."""
        b = self._block_flops(s)
        r = 2.5 if s.attention == "sdpa" else 2.0
        dec_linear = b["dec_self_linear"] + b["dec_cross_q"] + b["dec_rest_linear"]
        dec_attention = b["dec_self_attention"] + b["dec_cross_attention"]
        layers = (self.num_layers * (b["enc_linear"] + b["enc_attention"])
                  + self.num_decoder_layers * (dec_linear + dec_attention))
        attention = self.num_layers * b["enc_attention"] + self.num_decoder_layers * dec_attention
        backward = layers + (r - 1) * attention + b["head"]
        recompute = 0.0
        if s.grad_checkpointing:
            recompute = layers - self.num_layers * b["enc_last"] - self.num_decoder_layers * b["dec_last"]
        else:  # the first decoder layer's parts that need no gradient
            backward -= b["dec_self_linear"] + r * b["dec_self_attention"] + b["dec_cross_q"]
            if s.attention == "eager":
                backward -= b["dec_cross_attention"] / 2  # dQ of Q K^T
        steps = s.gradient_accumulation
        return {"forward": steps * (layers + b["head"]), "backward": steps * backward, "recompute": steps * recompute}
