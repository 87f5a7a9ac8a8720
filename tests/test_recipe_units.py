"""The official recipe's pieces in process: plain prompt tuning (``reparam="none"``) and the MLP
ablations of ResidualPromptModel, the optimizer groups, the LR schedules, the gradient
accumulation sampler, and the new settings' checks and flags."""

import pytest
import torch
from transformers import T5ForConditionalGeneration

from rpt_fast.ops.reference import residual_mlp_reference
from rpt_fast.presets import t5_config
from rpt_fast.prompt import PromptEmbedding, ResidualPromptModel
from rpt_fast.train.cli import config_from_args
from rpt_fast.train.config import TrainConfig
from rpt_fast.train.data import StepSampler
from rpt_fast.train.ds_config import build_ds_config
from rpt_fast.train.optim import ADAM_EPS, build_optimizer, lr_lambda


def tiny_t5():
    torch.manual_seed(1)
    return T5ForConditionalGeneration(t5_config("t5-tiny", dropout_rate=0.0)).eval()


def test_plain_prompt_tuning_has_no_mlp_and_the_same_prompt_init():
    residual = ResidualPromptModel(tiny_t5(), 5, 16, seed=3)
    plain = ResidualPromptModel(tiny_t5(), 5, 16, seed=3, reparam="none")
    assert isinstance(plain.prompt_encoder, PromptEmbedding)
    assert [n for n, _ in plain.prompt_encoder.named_parameters()] == ["prompt"]
    torch.testing.assert_close(plain.prompt_encoder.prompt, residual.prompt_encoder.prompt, rtol=0, atol=0)
    torch.testing.assert_close(plain.projected_prompt(), plain.prompt_encoder.prompt.detach(), rtol=0, atol=0)
    # P' = P is what reaches the encoder, with gradients to P.
    ids = torch.tensor([[4, 5, 6]])
    loss = plain(input_ids=ids, labels=torch.tensor([[7, 1]])).loss
    loss.backward()
    assert plain.prompt_encoder.prompt.grad is not None and plain.prompt_encoder.prompt.grad.abs().sum() > 0


def test_mlp_ablations_follow_the_official_resmlp():
    model = ResidualPromptModel(tiny_t5(), 5, 16, seed=3, layer_norm=False, residual=False, activation="tanh")
    mlp, p = model.prompt_encoder.mlp, model.prompt_encoder.prompt.detach()
    assert mlp.norm is None and not mlp.residual and mlp.activation == "tanh"
    expected = mlp.up(torch.tanh(mlp.down(p))).detach()  # no LayerNorm, no skip
    torch.testing.assert_close(model.projected_prompt(), expected)
    separate = ResidualPromptModel(tiny_t5(), 5, 16, seed=3, separate=True, layer_norm=False)
    assert separate.prompt_encoder.mlp.num_groups == 5 and not separate.prompt_encoder.mlp.layer_norm
    default = ResidualPromptModel(tiny_t5(), 5, 16, seed=3)
    m = default.prompt_encoder.mlp
    reference = residual_mlp_reference(default.prompt_encoder.prompt.detach(), m.down.weight, m.down.bias,
                                       m.up.weight, m.up.bias, m.norm.weight, m.norm.bias, m.norm.eps)
    torch.testing.assert_close(default.projected_prompt(), reference.detach())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"reparam": "mlp"}, "reparam: expected one of"),
        ({"activation": "swish"}, "activation: expected one of"),
        ({"reparam": "none", "separate": True}, "reparam: 'none' has no MLP"),
        ({"reparam": "none", "layer_norm": False}, "reparam: 'none' has no MLP"),
    ],
)
def test_prompt_model_argument_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ResidualPromptModel(tiny_t5(), 5, 16, **kwargs)


def test_optimizer_groups_give_the_mlp_its_own_lr_and_weight_decay():
    model = ResidualPromptModel(tiny_t5(), 5, 16, seed=3)
    optimizer = build_optimizer(model, TrainConfig(lr=0.3, weight_decay=1e-5, mlp_lr=1e-4, mlp_weight_decay=0.01))
    prompt, mlp = optimizer.param_groups
    assert prompt["params"] == [model.prompt_encoder.prompt] and (prompt["lr"], prompt["weight_decay"]) == (0.3, 1e-5)
    assert len(mlp["params"]) == len(list(model.prompt_encoder.mlp.parameters()))
    assert (mlp["lr"], mlp["weight_decay"], mlp["eps"]) == (1e-4, 0.01, ADAM_EPS)
    defaults = build_optimizer(model, TrainConfig(lr=0.3, weight_decay=1e-5)).param_groups[1]
    assert (defaults["lr"], defaults["weight_decay"]) == (0.3, 1e-5)  # the official defaults: the prompt's
    plain = ResidualPromptModel(tiny_t5(), 5, 16, seed=3, reparam="none")
    assert len(build_optimizer(plain, TrainConfig()).param_groups) == 1


def test_lr_schedules():
    constant, linear = lr_lambda("constant", 2, 10), lr_lambda("linear", 2, 10)
    assert [constant(s) for s in (0, 1, 2, 9)] == [0.5, 1.0, 1.0, 1.0]
    assert [linear(s) for s in (0, 1, 2, 6, 10)] == [0.5, 1.0, 1.0, 0.5, 0.0]
    assert lr_lambda("constant", 0, 10)(0) == 1.0
    with pytest.raises(ValueError, match="lr_scheduler: expected"):
        lr_lambda("cosine", 0, 10)


def test_accumulation_splits_each_global_batch_into_micro_batches_then_ranks():
    whole = StepSampler(64, 8, seed=1, rank=0, world_size=1).global_batch(3)
    parts = [StepSampler(64, 8, seed=1, rank=r, world_size=2, accumulation=2).rank_batch(3, m)
             for m in range(2) for r in range(2)]
    assert [len(p) for p in parts] == [2, 2, 2, 2] and sum(parts, []) == whole
    with pytest.raises(ValueError, match="does not split evenly over 2 ranks x 3 accumulation steps"):
        StepSampler(64, 8, seed=1, rank=0, world_size=2, accumulation=3)


def test_ds_config_carries_accumulation_and_the_micro_batch():
    stage = {"zero_stage": 3, "offload_param": "none"}
    ds = build_ds_config(TrainConfig(batch_size=8, gradient_accumulation_steps=2, **stage), world_size=2,
                         pin_memory=False)
    assert (ds["train_batch_size"], ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"]) == (8, 2, 2)
    assert ds["gradient_clipping"] == 0.0  # the official recipe: no clipping, never DeepSpeed's 1.0
    with pytest.raises(ValueError, match="over 3 ranks x 3 accumulation steps"):
        build_ds_config(TrainConfig(batch_size=6, gradient_accumulation_steps=3, **stage), world_size=3,
                        pin_memory=False)


def test_recipe_defaults_and_flags():
    cfg = config_from_args([])
    assert (cfg.reparam, cfg.lr_scheduler, cfg.max_grad_norm, cfg.warmup_steps) == ("residual", "constant", 0.0, 0)
    assert (cfg.layer_norm, cfg.residual, cfg.activation, cfg.gradient_accumulation_steps) == (True, True, "relu", 1)
    cfg = config_from_args([
        "--reparam", "none", "--lr-scheduler", "linear", "--mlp-lr", "0.01", "--mlp-weight-decay", "0",
        "--few-shot", "32", "--eval-split", "halves", "--wsc-format", "official", "--no-layer-norm", "--no-residual",
        "--activation", "gelu", "--gradient-accumulation-steps", "4", "--max-new-tokens", "3", "--task", "record",
    ])
    assert (cfg.reparam, cfg.lr_scheduler, cfg.mlp_lr, cfg.mlp_weight_decay) == ("none", "linear", 0.01, 0.0)
    assert (cfg.few_shot, cfg.eval_split, cfg.wsc_format, cfg.task) == (32, "halves", "official", "record")
    assert (cfg.layer_norm, cfg.residual, cfg.activation) == (False, False, "gelu")
    assert (cfg.gradient_accumulation_steps, cfg.max_new_tokens) == (4, 3)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"reparam": "mlp"}, "reparam: expected one of"),
        ({"lr_scheduler": "cosine"}, "lr_scheduler: expected one of"),
        ({"activation": "swish"}, "activation: expected one of"),
        ({"eval_split": "thirds"}, "eval_split: expected one of"),
        ({"gradient_accumulation_steps": 0}, "gradient_accumulation_steps: expected an int >= 1"),
        ({"batch_size": 8, "gradient_accumulation_steps": 3}, "must split into gradient_accumulation_steps=3"),
        ({"max_new_tokens": 0}, "max_new_tokens: expected an int >= 1"),
        ({"few_shot": 0}, "few_shot: expected an int >= 1"),
        ({"mlp_lr": 0.0}, "mlp_lr: expected a positive learning rate"),
        ({"mlp_weight_decay": -1.0}, "mlp_weight_decay: expected >= 0"),
        ({"reparam": "none", "mlp_lr": 0.1}, "mlp_lr: sets the MLP, which reparam='none' does not have"),
        ({"reparam": "none", "separate": True}, "separate: sets the MLP"),
    ],
)
def test_bad_recipe_settings_name_the_setting(changes, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**changes).validate()


def test_generation_length_is_the_flag_then_the_official_then_max_target_length(capsys):
    from types import SimpleNamespace

    from rpt_fast.train import trainer
    from rpt_fast.train.evaluate import generation_length
    from rpt_fast.train.tasks import Task

    main = SimpleNamespace(is_main=True)
    encoded = [SimpleNamespace(num_label_tokens=n) for n in (2, 6)]  # 1 and 5 tokens + eos
    boolq, jsonl = Task("boolq", [], [], "accuracy", [], 1), Task("jsonl", [], [], "accuracy")

    def _max_new_tokens(cfg, task, encoded, info):  # as trainer.Run takes it for T5
        default = generation_length(task, [], encoder_decoder=True, max_target_length=cfg.max_target_length)
        return trainer._max_new_tokens(cfg, default, encoded, info)

    assert _max_new_tokens(TrainConfig(max_new_tokens=5), boolq, encoded, main) == 5
    assert capsys.readouterr().out == ""
    assert _max_new_tokens(TrainConfig(max_target_length=16), jsonl, encoded, main) == 16
    assert _max_new_tokens(TrainConfig(), boolq, encoded, main) == 1
    assert "longest eval target has 5" in capsys.readouterr().out  # e.g. a byte-level tokenizer
