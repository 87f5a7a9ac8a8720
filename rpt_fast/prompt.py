"""``ResidualPromptModel``: a frozen Hugging Face backbone with a trainable residual soft prompt.

The reparameterized prompt P' (num_tokens, d_model) is prepended to the input embeddings of a
T5 encoder or of a decoder-only causal LM (GPT-2/Llama-style), exactly where PEFT's
PROMPT_TUNING puts its prompt, so ``export_peft`` hands P' to PEFT without changing the logits.
``reparam="none"`` gives the plain prompt-tuning baseline (P' = P) with the same machinery.
"""

from __future__ import annotations

import inspect
import os

import torch
from torch import nn

from .modules import ACTIVATIONS, FusedResidualMLP, ResidualPromptEncoder

_ENCODER_DECODER_TYPES = ("t5", "mt5", "umt5")
PROMPT_KEY = "prompt_embeddings"
REPARAMS = ("residual", "none")


class PromptEmbedding(nn.Module):
    """Plain prompt tuning (Lester et al., the official ``--prefix_MLP None``): P itself is the
    prompt. The interface of :class:`~rpt_fast.modules.ResidualPromptEncoder` (``prompt``,
    ``num_tokens``, ``forward``, ``projected_prompt``, ``reset_prompt``), so training, exports
    and checkpoints are shared; the state_dict holds ``prompt`` alone."""

    def __init__(self, num_tokens: int, d_model: int, *, init: torch.Tensor | None = None, device=None, dtype=None):
        super().__init__()
        self.prompt = nn.Parameter(torch.empty(num_tokens, d_model, device=device, dtype=dtype))
        self.num_tokens = num_tokens  # an int: under ZeRO-3 the released prompt has shape (0,)
        self.reset_prompt(init)

    reset_prompt = ResidualPromptEncoder.reset_prompt

    def forward(self) -> torch.Tensor:
        # A copy: ZeRO-3 releases the Parameter's storage when this forward returns.
        return self.prompt.clone()

    @torch.no_grad()
    def projected_prompt(self) -> torch.Tensor:
        return self.prompt.detach().clone()


def _ablated_mlp(d_model: int, bottleneck: int, num_tokens: int, *, separate: bool, dropout: float,
                 backend: str, layer_norm: bool, residual: bool, activation: str, device, dtype) -> nn.Module:
    """The official ResMLP's ablations (``layer_norm``, ``residual``, ``activation``), shared
    or one per token; such configurations run eager (the kernels fuse the paper's MLP only)."""
    return FusedResidualMLP(
        d_model, bottleneck, separate=separate, num_groups=num_tokens if separate else None, dropout=dropout,
        layer_norm=layer_norm, residual=residual, activation=activation, backend=backend, device=device, dtype=dtype,
    )


def _check_backbone(backbone) -> bool:
    """Returns ``is_encoder_decoder`` after checking the backbone is one we know how to prompt."""
    config = getattr(backbone, "config", None)
    if not isinstance(backbone, nn.Module) or config is None or not hasattr(backbone, "generate"):
        raise TypeError(
            "backbone: expected a transformers T5ForConditionalGeneration or a decoder-only causal "
            f"LM, got {type(backbone).__name__}"
        )
    if getattr(config, "is_encoder_decoder", False):
        if config.model_type not in _ENCODER_DECODER_TYPES:
            raise TypeError(
                f"backbone: encoder-decoder models must be T5-family {_ENCODER_DECODER_TYPES}, "
                f"got model_type {config.model_type!r} ({type(backbone).__name__})"
            )
        return True
    if not type(backbone).__name__.endswith(("ForCausalLM", "LMHeadModel")):
        raise TypeError(
            "backbone: expected a T5ForConditionalGeneration or a decoder-only causal LM "
            f"(*ForCausalLM / *LMHeadModel), got {type(backbone).__name__}"
        )
    return False


def _sample_vocab_rows(embedding: nn.Embedding, num_tokens: int, seed: int | None) -> torch.Tensor:
    """Embeddings of ``num_tokens`` token ids drawn uniformly from the vocabulary (the paper's
    init). Under DeepSpeed ZeRO-3 the weight is partitioned: gather it first (every rank)."""
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    ids = torch.randint(0, embedding.num_embeddings, (num_tokens,), generator=generator)
    weight = embedding.weight
    ids = ids.to(weight.device)
    with torch.no_grad():
        if hasattr(weight, "ds_id"):
            import deepspeed

            with deepspeed.zero.GatheredParameters([weight], modifier_rank=None):
                return embedding(ids).clone()
        return embedding(ids).clone()


def _check_ids(name: str, t, ref: torch.Tensor | None, device: torch.device) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 2:
        raise ValueError(f"{name}: expected a 2-D (batch, seq_len) tensor, got shape {tuple(t.shape)}")
    if t.is_floating_point() or t.is_complex():
        raise TypeError(f"{name}: expected an integer tensor, got dtype {t.dtype}")
    if ref is not None and tuple(t.shape) != tuple(ref.shape):
        raise ValueError(
            f"{name}: expected the shape of input_ids {tuple(ref.shape)}, got {tuple(t.shape)}"
        )
    if t.device != device:
        raise ValueError(f"{name}: expected device {device} (the backbone's), got {t.device}")


class ResidualPromptModel(nn.Module):
    """A frozen backbone whose input gets the residual soft prompt P' prepended.

    Args:
        backbone: a ``T5ForConditionalGeneration`` (P' goes before the encoder's input
            embeddings) or a decoder-only causal LM (P' goes before the input embeddings; labels
            get -100 at the prompt positions). Its parameters are frozen here; its train/eval
            mode follows this module's (T5 dropout stays active in training, as in the paper).
        num_tokens, bottleneck, separate, dropout, backend: the :class:`ResidualPromptEncoder`.
        init: "vocab" (rows of the input embedding at token ids drawn with a generator seeded
            by ``seed``; works with a ZeRO-3 partitioned embedding), "random"
            (uniform(-0.5, 0.5)) or a (num_tokens, d_model) tensor.
        seed: seeds the "vocab" draw; None draws a fresh seed (give one when several ranks
            build the model: they must agree on P).
        reparam: "residual" (P' = MLP(P) + P) or "none" (plain prompt tuning: P' = P, no MLP;
            the same "vocab" init of P, exports and checkpoint layout).
        layer_norm, residual, activation: the MLP ablations of the official code (no
            LayerNorm, no skip connection, another nonlinearity); they run the eager MLP.

    P and the MLP are kept in float32 (float64 for a float64 backbone); P' is cast to the
    embeddings' dtype when prepended, as PEFT does.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_tokens: int = 100,
        bottleneck: int = 800,
        *,
        separate: bool = False,
        dropout: float = 0.0,
        init="vocab",
        backend: str = "auto",
        seed: int | None = None,
        reparam: str = "residual",
        layer_norm: bool = True,
        residual: bool = True,
        activation: str = "relu",
    ):
        super().__init__()
        if reparam not in REPARAMS:
            raise ValueError(f"reparam: expected one of {REPARAMS}, got {reparam!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation: expected one of {tuple(ACTIVATIONS)}, got {activation!r}")
        ablated = not (layer_norm and residual and activation == "relu")
        if reparam == "none" and (ablated or separate or dropout):
            raise ValueError(
                "reparam: 'none' has no MLP, so separate, dropout, layer_norm, residual and activation must keep "
                f"their defaults, got separate={separate}, dropout={dropout}, layer_norm={layer_norm}, "
                f"residual={residual}, activation={activation!r}"
            )
        self.is_encoder_decoder = _check_backbone(backbone)
        # Decoder-only models that take position ids get them from the mask (see forward).
        self._positions_from_mask = not self.is_encoder_decoder and "position_ids" in inspect.signature(
            backbone.forward).parameters
        if isinstance(num_tokens, bool) or not isinstance(num_tokens, int) or num_tokens < 1:
            raise ValueError(f"num_tokens: expected a positive int, got {num_tokens!r}")
        embedding = backbone.get_input_embeddings()
        if not isinstance(embedding, nn.Embedding):
            raise TypeError(
                "backbone: expected get_input_embeddings() to return an nn.Embedding, "
                f"got {type(embedding).__name__}"
            )
        if isinstance(init, str) and init == "vocab":
            init_tensor = _sample_vocab_rows(embedding, num_tokens, seed)
        elif isinstance(init, str) and init == "random":
            init_tensor = None
        elif isinstance(init, torch.Tensor):
            init_tensor = init.detach()
        else:
            raise ValueError(
                f"init: expected 'vocab', 'random' or a tensor of shape "
                f"({num_tokens}, {embedding.embedding_dim}), got {init!r}"
            )
        for param in backbone.parameters():
            param.requires_grad_(False)
        self.backbone = backbone
        weight = embedding.weight
        # Built on the CPU, so its init draws from the CPU RNG whatever device the backbone is
        # on (under ZeRO-3 the embedding is on cuda:N): the same numbers in every mode.
        factory = {"device": "cpu", "dtype": torch.promote_types(weight.dtype, torch.float32)}
        init_tensor = None if init_tensor is None else init_tensor.cpu()
        d_model = embedding.embedding_dim
        self.reparam = reparam
        if reparam == "none":
            self.prompt_encoder = PromptEmbedding(num_tokens, d_model, init=init_tensor, **factory).to(weight.device)
            return
        self.prompt_encoder = ResidualPromptEncoder(
            num_tokens, d_model, bottleneck, separate=separate, dropout=dropout, init=init_tensor, backend=backend,
            **factory,
        )
        if ablated:
            self.prompt_encoder.mlp = _ablated_mlp(
                d_model, bottleneck, num_tokens, separate=separate, dropout=dropout, backend=backend,
                layer_norm=layer_norm, residual=residual, activation=activation, **factory,
            )
        self.prompt_encoder.to(weight.device)

    @property
    def num_tokens(self) -> int:
        return self.prompt_encoder.num_tokens

    def trainable_parameters(self) -> list[nn.Parameter]:
        """P and the MLP's parameters: all that the optimizer should see."""
        return list(self.prompt_encoder.parameters())

    def _embed_with_prompt(self, input_ids, attention_mask):
        device = self.backbone.get_input_embeddings().weight.device
        _check_ids("input_ids", input_ids, None, device)
        if attention_mask is not None:
            _check_ids("attention_mask", attention_mask, input_ids, device)
        embeds = self.backbone.get_input_embeddings()(input_ids)
        batch = input_ids.shape[0]
        prompt = self.prompt_encoder().to(embeds.dtype)
        embeds = torch.cat((prompt.unsqueeze(0).expand(batch, -1, -1), embeds), dim=1)
        if attention_mask is not None:
            ones = attention_mask.new_ones(batch, self.num_tokens)
            attention_mask = torch.cat((ones, attention_mask), dim=1)
        return embeds, attention_mask

    def _position_ids(self, attention_mask: torch.Tensor) -> torch.Tensor:
        """Positions of P' + input with the input's left padding skipped: P' takes 0..n-1 and
        each row's first real token n, whatever the padding side, as ``generate`` numbers them.
        Unpadded and right-padded rows get 0, 1, 2, ... (the backbone's own default)."""
        n = self.num_tokens
        left_pad = (attention_mask[:, n:].cumsum(-1) == 0).sum(-1, keepdim=True)
        positions = torch.arange(attention_mask.shape[1], device=attention_mask.device).unsqueeze(0)
        return (positions - torch.where(positions >= n, left_pad, 0)).clamp(min=0)

    def forward(self, input_ids, attention_mask=None, labels=None, **kwargs):
        """The backbone's output (``.loss``, ``.logits``) with P' prepended.

        T5: ``labels`` are the decoder targets, passed on unchanged. Decoder-only: ``labels``
        has input_ids' shape (the usual causal-LM labels) and gets -100 at the prompt positions,
        so the logits have ``num_tokens + seq_len`` positions; with an ``attention_mask`` the
        position ids skip left padding, so a row's logits do not depend on the padding side.
        """
        embeds, attention_mask = self._embed_with_prompt(input_ids, attention_mask)
        if not self.is_encoder_decoder:
            if labels is not None:
                _check_ids("labels", labels, input_ids, embeds.device)
                pad = labels.new_full((labels.shape[0], self.num_tokens), -100)
                labels = torch.cat((pad, labels), dim=1)
            if attention_mask is not None and self._positions_from_mask and "position_ids" not in kwargs:
                kwargs["position_ids"] = self._position_ids(attention_mask)
        return self.backbone(
            inputs_embeds=embeds, attention_mask=attention_mask, labels=labels, **kwargs
        )

    @torch.no_grad()
    def generate(self, input_ids, attention_mask=None, **generate_kwargs) -> torch.LongTensor:
        """Generation with P' prepended. T5: the decoder's ids, as ``generate`` returns them.
        Decoder-only: only the newly generated ids (pass ``max_new_tokens``, not ``max_length``)."""
        embeds, attention_mask = self._embed_with_prompt(input_ids, attention_mask)
        return self.backbone.generate(
            inputs_embeds=embeds, attention_mask=attention_mask, **generate_kwargs
        )

    def projected_prompt(self) -> torch.Tensor:
        """P' (num_tokens, d_model), detached, computed without dropout."""
        return self.prompt_encoder.projected_prompt()

    def save_prompt(self, path) -> None:
        """Writes P' to a safetensors file under the key ``"prompt_embeddings"``."""
        from safetensors.torch import save_file

        save_file({PROMPT_KEY: self.projected_prompt().cpu().contiguous()}, os.fspath(path))

    def export_peft(self, save_dir) -> None:
        """Writes a PEFT PROMPT_TUNING adapter holding P' (``adapter_config.json``,
        ``adapter_model.safetensors``); ``peft.PeftModel.from_pretrained(backbone, save_dir)``
        then gives this model's logits with no MLP left at inference."""
        try:
            from peft import PromptTuningConfig
        except ImportError as exc:
            raise ImportError(f"export_peft needs the peft package ({exc})") from exc
        config = self.backbone.config
        peft_config = PromptTuningConfig(
            task_type="SEQ_2_SEQ_LM" if self.is_encoder_decoder else "CAUSAL_LM",
            num_virtual_tokens=self.num_tokens,
            token_dim=self.backbone.get_input_embeddings().embedding_dim,
            num_transformer_submodules=1,
            base_model_name_or_path=getattr(config, "_name_or_path", None) or None,
            inference_mode=True,
        )
        os.makedirs(save_dir, exist_ok=True)
        peft_config.save_pretrained(os.fspath(save_dir))
        self.save_prompt(os.path.join(save_dir, "adapter_model.safetensors"))
