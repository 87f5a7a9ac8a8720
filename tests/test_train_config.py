"""Settings checks, the DeepSpeed config builder and the command line."""

import json
import re

import pytest

from rpt_fast.train.cli import build_parser, config_from_args
from rpt_fast.train.config import TrainConfig
from rpt_fast.train.ds_config import build_ds_config


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"batch_size": 0}, "--batch-size: expected an int >= 1, got 0"),
        ({"lr": 0.0}, "--lr: expected a positive learning rate"),
        ({"max_grad_norm": -1.0}, "--max-grad-norm: expected >= 0"),
        ({"prompt_dropout": 1.0}, "--prompt-dropout: expected a probability"),
        ({"zero_stage": 4}, "--zero-stage: expected 'auto' or one of"),
        ({"offload_param": "disk"}, "--offload-param: expected 'auto' or one of"),
        ({"offload_param": "cpu", "zero_stage": 2}, "--offload-param: cpu needs DeepSpeed ZeRO stage 3 .*got --zero-stage 2"),
        ({"offload_param": "cpu", "deepspeed": False}, "--offload-param: cpu needs DeepSpeed ZeRO stage 3 .*got --no-deepspeed"),
        ({"offload_param": "nvme"}, "--nvme-path: --offload-param nvme needs a directory"),
        ({"resume": True}, "--resume: needs --output-dir"),
        ({"deepspeed_config": "/nonexistent/ds.json"}, "--deepspeed-config: expected a JSON file, got '/nonexistent/ds.json'"),
        ({"backend": "cuda"}, "--backend: expected one of"),
        ({"save_total_limit": 0}, "--save-total-limit: expected an int >= 1, got 0"),
    ],
)
def test_bad_settings_name_the_flag(changes, message):
    """Settings errors read as the command line's: the flag, what was expected, what was given
    (ValueErrors of the form "field: ..." are turned into the same form)."""
    from rpt_fast.train.errors import as_usage_error

    with pytest.raises(ValueError) as info:
        TrainConfig(**changes).validate()
    assert re.match(message, str(as_usage_error(info.value))), str(info.value)


def test_ds_config_sets_clipping_batches_and_offload_explicitly():
    cfg = TrainConfig(batch_size=8, max_grad_norm=0.0, zero_stage=3, offload_param="cpu").validate()
    ds = build_ds_config(cfg, world_size=2, pin_memory=False)
    assert ds["gradient_clipping"] == 0.0  # never DeepSpeed's implicit 1.0
    assert (ds["train_batch_size"], ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"]) == (8, 4, 1)
    assert ds["zero_optimization"]["stage"] == 3
    assert ds["zero_optimization"]["offload_param"] == {"device": "cpu", "pin_memory": False}
    with pytest.raises(ValueError, match="global batch 8 must split evenly over 3 ranks x 1 accumulation"):
        build_ds_config(cfg, world_size=3, pin_memory=False)


def test_user_json_is_merged_over_the_generated_config(tmp_path):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"zero_optimization": {"stage3_max_live_parameters": 1000}, "bf16": {"enabled": True}}))
    ds = build_ds_config(TrainConfig(deepspeed_config=str(path), zero_stage=3, offload_param="none").validate(),
                         world_size=1, pin_memory=False)
    assert ds["zero_optimization"]["stage"] == 3 and ds["zero_optimization"]["stage3_max_live_parameters"] == 1000
    assert ds["bf16"]["enabled"] is True
    path.write_text("{oops")
    with pytest.raises(ValueError, match="is not valid JSON"):
        build_ds_config(TrainConfig(deepspeed_config=str(path), zero_stage=3, offload_param="none").validate(),
                        world_size=1, pin_memory=False)


def test_command_line_defaults_are_the_papers_and_accept_the_launchers_local_rank():
    cfg = config_from_args(["--local_rank=1"])
    assert (cfg.lr, cfg.weight_decay, cfg.bottleneck, cfg.zero_stage, cfg.offload_param) == (0.3, 1e-5, 800, "auto", "auto")
    assert cfg.model == "t5-tiny" and cfg.task == "synthetic" and cfg.deepspeed
    cfg = config_from_args(["--no-deepspeed", "--offload-param", "none", "--num-tokens", "7", "--separate"])
    assert not cfg.deepspeed and cfg.num_tokens == 7 and cfg.separate


def test_command_line_errors_name_the_flag(capsys):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["--offload-param", "disk"])
    assert info.value.code == 2
    assert capsys.readouterr().err.startswith("rpt-train: error: --offload-param: invalid choice")


def test_new_fields_map_to_flags_without_a_table():
    from rpt_fast.train.errors import UsageError, as_usage_error, flag_name

    assert flag_name("gradient_accumulation_steps") == "--gradient-accumulation-steps"
    assert str(UsageError("mlp_lr", "expected > 0, got -1")) == "--mlp-lr: expected > 0, got -1"
    assert str(as_usage_error(ValueError("num_tokens: expected an int >= 1, got 0"))) == \
        "--num-tokens: expected an int >= 1, got 0"
    assert as_usage_error(ValueError("something internal: broke")) is None  # a bug keeps its traceback
    assert as_usage_error(RuntimeError("num_tokens: x")) is None


def test_zero3_live_parameter_limits_come_from_the_settings():
    zero = build_ds_config(TrainConfig(max_live_parameters=1000, zero_stage=3, offload_param="none"), world_size=1,
                           pin_memory=False)[
        "zero_optimization"
    ]
    assert zero["stage3_max_live_parameters"] == 1000
    assert zero["stage3_prefetch_bucket_size"] == zero["stage3_max_reuse_distance"] == 500


def test_plan_prints_the_memory_plan_of_the_run_and_a_verdict(capsys):
    from rpt_fast.memory import format_plan, plan
    from rpt_fast.train import autoplan
    from rpt_fast.train.cli import main

    flags = ["--model", "t5-xl", "--bf16", "--zero-stage", "3", "--offload-param", "cpu", "--max-input-length",
             "512", "--batch-size", "16", "--gpu-memory", "80GB"]
    main(["--plan", *flags, "--world-size", "2"])
    printed = capsys.readouterr().out
    resolved, reason = autoplan.resolve(config_from_args(flags), 2)  # ZeRO-3's live limit, planned for 2 ranks
    expected = autoplan.planner_setup(resolved, 2)
    assert (expected.batch_size, expected.source_length, expected.offload_param) == (8, 512, "cpu")
    assert "gathered parameters live" in reason
    assert printed.startswith(f"{reason}\n{format_plan(plan(expected))}")
    assert "backbone offloaded to CPU memory" in printed and "\nfits: about" in printed


def test_report_to_tensorboard_without_the_package_is_a_flag_error(monkeypatch):
    from rpt_fast.train import tensorboard
    from rpt_fast.train.errors import UsageError

    monkeypatch.setattr(tensorboard.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UsageError, match="--report-to: tensorboard needs the tensorboard package"):
        tensorboard.check_available()
