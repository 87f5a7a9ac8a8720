"""Settings checks, the DeepSpeed config builder and the command line."""

import json
import os
import re

import pytest

from rpt_fast.train.cli import config_from_args
from rpt_fast.train.config import TrainConfig
from rpt_fast.train.ds_config import build_ds_config
from rpt_fast.train.flags import build_parser


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
    from rpt_fast.train.config import as_usage_error

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
    from rpt_fast.train.config import as_usage_error
    from rpt_fast.train.errors import UsageError, flag_name

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


def test_every_setting_says_what_resume_does_with_it():
    # a new TrainConfig field must be classified: kept from the run, free to change, or this command's own
    from rpt_fast.train.config import FIXED, FREE, INVOCATION, RESUME_ROLES, field_names

    assert sorted(RESUME_ROLES) == sorted(field_names())
    assert set(RESUME_ROLES.values()) <= {FIXED, FREE, INVOCATION}
    assert RESUME_ROLES["lr"] == RESUME_ROLES["model"] == RESUME_ROLES["seed"] == RESUME_ROLES["bf16"] == FIXED
    assert RESUME_ROLES["max_steps"] == RESUME_ROLES["eval_interval"] == RESUME_ROLES["save_interval"] == FREE


def _saved_run(tmp_path, step=4, **settings):
    """A run folder as rpt-train leaves it, without training: config.json and a checkpoint pointer."""
    out = tmp_path / "run"
    (out / "checkpoints" / f"step-{step:08d}").mkdir(parents=True)
    (out / "checkpoints" / "latest").write_text(f"step-{step:08d}")
    cfg = TrainConfig(output_dir=str(out), **settings)
    (out / "config.json").write_text(json.dumps({"train": cfg.recorded(), "deepspeed": None}))
    return str(out)


def test_resume_refuses_every_setting_that_defines_the_run_and_takes_the_others(tmp_path):
    from rpt_fast.train import resume
    from rpt_fast.train.config import FIXED, RESUME_ROLES
    from rpt_fast.train.errors import UsageError

    out = _saved_run(tmp_path, lr=0.1, max_steps=10, data_dir="data")
    other = {int: 7, float: 0.5, str: "other"}
    for name, role in RESUME_ROLES.items():
        if role != FIXED:
            continue
        default = getattr(TrainConfig(), name)
        value = (not default) if isinstance(default, bool) else other.get(type(default), 3)  # None: any int differs
        with pytest.raises(UsageError, match=f"^--{name.replace('_', '-')}: the run in {out} trains with"):
            resume.prepare(TrainConfig(output_dir=out, resume=True, **{name: value}), {name})
    # a flag with the saved value (a path as the run named it or absolute) is no change
    cfg, resumption = resume.prepare(TrainConfig(output_dir=out, resume=True, lr=0.1, data_dir="data"),
                                     {"lr", "data_dir"})
    assert resumption == resume.Resumption(4, {}) and cfg.data_dir == os.path.abspath("data")
    # the defaults of flags not given never override the run: lr stays 0.1, max_steps 10
    cfg, resumption = resume.prepare(TrainConfig(output_dir=out, resume=True, eval_interval=5, max_steps=20),
                                     {"eval_interval", "max_steps"})
    assert (cfg.lr, cfg.max_steps, cfg.eval_interval, cfg.resume) == (0.1, 20, 5, True)
    assert cfg.progress and not resume.prepare(TrainConfig(output_dir=out, resume=True, progress=False), set())[0].progress
    assert resumption.changes == {"eval_interval": [100, 5], "max_steps": [10, 20]}
    # a linear schedule decays to 0 at the last step: the run keeps its length
    linear = _saved_run(tmp_path / "linear", lr_scheduler="linear", max_steps=10)
    with pytest.raises(UsageError, match="^--max-steps: the linear learning-rate schedule"):
        resume.prepare(TrainConfig(output_dir=linear, resume=True, max_steps=20), {"max_steps"})


def test_resume_matches_auto_with_the_planned_choice_and_plans_again_for_new_memory(tmp_path):
    from rpt_fast.train import resume

    out = _saved_run(tmp_path, zero_stage=3, offload_param="cpu", max_live_parameters=1000, gpu_memory="8GB")
    # "auto" (the Python API's default, or repeated on the command line) is what the planner chose
    cfg, resumption = resume.prepare(TrainConfig(output_dir=out, resume=True), {"zero_stage", "offload_param"})
    assert (cfg.zero_stage, cfg.offload_param, cfg.max_live_parameters) == (3, "cpu", 1000)
    assert resumption.changes == {}
    resume.prepare(TrainConfig(output_dir=out, resume=True, gpu_memory="8GB"), set(resume.field_names()))  # train()'s
    # more memory: the live-parameter limit is planned again, unless given too
    cfg, resumption = resume.prepare(TrainConfig(output_dir=out, resume=True, gpu_memory="80GB"), {"gpu_memory"})
    assert (cfg.gpu_memory, cfg.max_live_parameters) == ("80GB", None)
    assert resumption.changes == {"gpu_memory": ["8GB", "80GB"], "max_live_parameters": [1000, None]}
    cfg, resumption = resume.prepare(TrainConfig(output_dir=out, resume=True, gpu_memory="80GB", max_live_parameters=5),
                                     {"gpu_memory", "max_live_parameters"})
    assert cfg.max_live_parameters == 5 and resumption.changes["max_live_parameters"] == [1000, 5]


def test_resume_auto_starts_where_there_is_no_checkpoint(tmp_path):
    from rpt_fast.train import resume
    from rpt_fast.train.errors import UsageError

    cfg, resumption = resume.prepare(TrainConfig(output_dir=str(tmp_path), resume="auto"), set())
    assert resumption is None and cfg.resume is False
    with pytest.raises(UsageError, match="^--resume: nothing to resume in --output-dir .* \\(it has no checkpoint\\)"):
        resume.prepare(TrainConfig(output_dir=str(tmp_path), resume=True), set())
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--resume", str(tmp_path)])  # the folder is --output-dir's


# --config files --------------------------------------------------------------------------------


def test_config_file_settings_lose_to_the_command_line(tmp_path):
    from rpt_fast.train.flags import parse

    path = tmp_path / "run.yaml"
    path.write_text("lr: 1e-5  # PyYAML reads this as a string\nmax_steps: 60\nbf16: true\nzero_stage: '3'\n"
                    "resume: auto\noutput_dir: out\ndata_dir: null\nweight_decay: 0\n")
    cfg, options = parse(["--config", str(path), "--max-steps", "90"])
    assert (cfg.lr, cfg.max_steps, cfg.bf16, cfg.zero_stage, cfg.resume, cfg.weight_decay) == (1e-5, 90, True, 3, "auto", 0.0)
    assert isinstance(cfg.weight_decay, float)
    assert options["explicit"] == {"lr", "max_steps", "bf16", "zero_stage", "resume", "output_dir", "data_dir",
                                   "weight_decay"}
    json_path = tmp_path / "run.json"
    json_path.write_text(json.dumps({"lr": 0.05, "separate": True}))
    assert parse(["--config", str(json_path)])[0].separate


@pytest.mark.parametrize("text, message", [
    ("learning_rate: 0.1\nfoo: 1\n", "unknown settings 'learning_rate', 'foo'"),
    ("max-steps: 10\n", "unknown setting 'max-steps' (did you mean max_steps?)"),
    ("lr: fast\n", "lr: expected float, got 'fast'"),
    ("max_steps: 1.5\n", "max_steps: expected int | None, got 1.5"),
    ("backend: cuda\n", "backend: expected one of ('auto', 'triton', 'native', 'eager'), got 'cuda'"),
    ("- lr\n", "expected a mapping of settings (name: value), got a list"),
    ("lr: [\n", "is not valid YAML ("),
    ('{"train": {"lr": 0.1}, "extra": 1}', "unknown setting 'extra'"),
])
def test_bad_config_files_are_one_line_naming_the_file_and_the_key(tmp_path, capsys, text, message):
    from rpt_fast.train.flags import parse

    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(SystemExit) as info:
        parse(["--config", str(path)])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"rpt-train: error: --config: {path}: {message}") or \
        err.startswith(f"rpt-train: error: --config: {path} {message}"), err


def test_rpt_memory_reads_config_files_too(tmp_path, capsys):
    from rpt_fast.train.memory_cli import main

    flags = ["--model", "t5-xl", "--bf16", "--max-input-length", "512", "--zero-stage", "3", "--gpu-memory", "8GB"]
    main(flags)
    expected = capsys.readouterr().out
    path = tmp_path / "plan.yaml"
    path.write_text("model: t5-xl\nbf16: true\nmax_input_length: 512\nzero_stage: 3\ngpu_memory: 8GB\n")
    main(["--config", str(path)])
    assert capsys.readouterr().out == expected
