"""Tiny decoder-only backbones and tokenizers for the decoder-only tests, built from configs (no
downloads): a Qwen2 with q/k/v biases, a Llama with a tied head, and a byte-level BPE tokenizer
that adds BOS (as Llama's does) with an optional chat template; ``save_checkpoint`` writes a
model and tokenizer folder that ``rpt-train --model DIR`` reads as a local checkpoint."""

from __future__ import annotations

import torch

# Llama 3's layout in miniature: BOS from the template, the user turn, the assistant header.
CHAT_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
SPECIALS = ("<pad>", "</s>", "<s>")  # pad 0, eos 1, bos 2: the ids of the byte-level ByT5 presets


def byte_tokenizer(*, chat_template: str | None = None):
    """A byte-level BPE tokenizer without merges (one token per byte, ids 3..258) whose encoding
    starts with BOS, like Llama's; ``chat_template`` is set when given."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {token: i for i, token in enumerate(SPECIALS)}
    for char in bytes_to_unicode().values():
        vocab[char] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", 2)])
    out = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    if chat_template is not None:
        out.chat_template = chat_template
    return out


def _ids() -> dict:
    return {"pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2}


def qwen2(seed: int = 0, dtype=torch.float32):
    """Qwen2 (q/k/v biases, grouped-query attention), random biases so they matter."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=384, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=False, initializer_range=0.2, **_ids())
    model = Qwen2ForCausalLM(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(".bias"):
                param.normal_(0.0, 0.2)
    return model.to(dtype).eval()


def tied_llama(seed: int = 0, dtype=torch.float32):
    """Llama with the head tied to the input embedding."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=384, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=True, initializer_range=0.2, **_ids())
    model = LlamaForCausalLM(config)
    assert model.lm_head.weight is model.get_input_embeddings().weight
    return model.to(dtype).eval()


def save_checkpoint(model, folder: str, tokenizer=None) -> str:
    """``model`` (and ``tokenizer``) saved as a local Hugging Face checkpoint folder."""
    model.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return folder
