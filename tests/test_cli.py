"""``rpt-train`` as a user meets it, run as a subprocess: bad input ends in one line on stderr
naming the flag, exit code 2, no traceback and no leftover folder (also under the ``deepspeed``
launcher on two CPU ranks); ``--help`` shows every flag with its real default."""

import argparse
import json
import os
import subprocess
import sys

import pytest

from rpt_fast.train.cli import config_from_args

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "train_scripts"))
from cli_run import env, rpt_train  # noqa: E402

pytestmark = pytest.mark.timeout(180)


def assert_one_line_error(proc, expected: str) -> None:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert len(lines) == 1 and lines[0].startswith(f"rpt-train: error: {expected}"), proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr


def _bad_data_dir(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text('{"input": "a", "target": "b"}\n{"input": "c", target: "d"}\n')
    (data / "val.jsonl").write_text('{"input": "a", "target": "b"}\n')
    return str(data)


BAD_INPUTS = [
    (["--task", "nope"], "--task: expected one of"),
    (["--model", "/no/such/checkpoint"], "--model: expected a preset"),
    (["--task", "boolq", "--data-dir", "EMPTY"], "--data-dir: task 'boolq' expects train.jsonl"),
    (["--task", "jsonl", "--data-dir", "BAD"], "--data-dir: BAD/train.jsonl:2: not valid JSON"),
    (["--num-tokens", "0"], "--num-tokens: expected an int >= 1, got 0"),
    (["--offload-param", "disk"], "--offload-param: invalid choice: 'disk'"),
    (["--batch-size", "32", "--max-train-examples", "10"], "--batch-size: expected at most the 10 training"),
    (["--model", "EMPTY"], "--model: 'EMPTY' has no config.json: expected a Hugging Face checkpoint directory"),
    (["--model", "T5"], "--model: 'T5' has a config.json (t5) but no weights: expected model.safetensors or"),
    (["--model", "GPT2"], "--model: 'GPT2' has a config.json (gpt2) but no weights"),
    (["--model", "ODD"], "--model: ODD/config.json: model_type 'nosuch' is not one that transformers"),
    (["--config", "EMPTY"], "--config: cannot read 'EMPTY'"),
]


def _model_folders(tmp_path):
    """Checkpoint folders that cannot be loaded: configs without weights, an unknown model type."""
    from transformers import GPT2Config

    from rpt_fast.presets import t5_config

    t5_config("t5-tiny").save_pretrained(tmp_path / "T5")
    GPT2Config(n_layer=1, n_embd=32, n_head=2).save_pretrained(tmp_path / "GPT2")
    (tmp_path / "ODD").mkdir()
    (tmp_path / "ODD" / "config.json").write_text(json.dumps({"model_type": "nosuch"}))


@pytest.mark.parametrize("args, expected", BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_is_one_line_naming_the_flag_and_leaves_nothing(tmp_path, args, expected):
    (tmp_path / "EMPTY").mkdir()
    bad = _bad_data_dir(tmp_path)
    _model_folders(tmp_path)
    args = [bad if a == "BAD" else a for a in args]
    before = set(os.listdir(tmp_path))
    proc = rpt_train(tmp_path, *args)
    assert_one_line_error(proc, expected.replace("BAD", bad))
    assert proc.stdout == ""  # nothing before it (the memory planner's choice is made later)
    assert set(os.listdir(tmp_path)) == before  # no rpt-runs/ folder, nothing else


def test_debug_shows_the_traceback(tmp_path):
    for proc in (rpt_train(tmp_path, "--task", "nope", "--debug"), rpt_train(tmp_path, "--task", "nope", RPT_DEBUG="1")):
        assert proc.returncode != 0
        assert "Traceback" in proc.stderr and "--task: expected one of" in proc.stderr


def test_bad_input_under_the_deepspeed_launcher_is_one_line_and_exit_code_2(tmp_path):
    proc = rpt_train(tmp_path, "--task", "nope", launcher_ranks=2)
    assert_one_line_error(proc, "--task: expected one of")  # both ranks failed, one line printed
    assert not os.path.exists(tmp_path / "rpt-runs")


def test_error_after_the_process_group_started_under_the_launcher_is_one_line_too(tmp_path):
    from rpt_fast.train import checkpoint

    (tmp_path / "config.json").write_text(json.dumps({"train": config_from_args(["--num-tokens", "4"]).to_dict()}))
    tmp = checkpoint.begin(str(tmp_path / "checkpoints"), 4)
    with open(os.path.join(tmp, "plain_state.pt"), "wb") as handle:
        handle.write(b"0123456789")
    folder = checkpoint.seal(str(tmp_path / "checkpoints"), tmp, 4)
    with open(os.path.join(folder, "plain_state.pt"), "r+b") as handle:
        handle.truncate(4)
    proc = rpt_train(tmp_path, "--output-dir", str(tmp_path), "--resume", "--num-tokens", "4", launcher_ranks=2)
    assert_one_line_error(proc, f"--resume: checkpoint file {folder}/plain_state.pt is truncated")


def test_world_size_is_a_plan_option(tmp_path):
    proc = rpt_train(tmp_path, "--world-size", "2")
    assert_one_line_error(proc, "--world-size: only with --plan")


# --help ---------------------------------------------------------------------------------------


def _options():
    from rpt_fast.train.flags import build_parser

    parser = build_parser()
    return parser, [a for a in parser._actions if a.option_strings and a.help != argparse.SUPPRESS
                    and not isinstance(a, argparse._HelpAction)]


def test_help_shows_every_flag_with_help_and_its_real_default(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "rpt_fast.train", "--help"], env=env(COLUMNS="200"),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split("model and data:", 1)[1].split())  # the flags' help, not usage
    parser, actions = _options()
    for action in actions:
        assert action.help, f"{action.option_strings[0]} has no help"
        if action.nargs == 0:
            # On/off flags say what they do, never "(default: True)" or "(default: False)".
            continue
        if action.default is None:
            assert "default" in action.help, f"{action.option_strings[0]}: say what happens without it"
        elif "default" not in action.help:
            assert f"(default: {action.default})" in text, action.option_strings[0]
    assert "(default: True)" not in text and "(default: False)" not in text and "(default: None)" not in text
    formatter = parser._get_formatter()
    for action in actions:  # one default per flag, never "(default: keep them) (default: None)"
        assert formatter._get_help_string(action).count("(default:") <= 1, action.option_strings[0]
    for flag, default in (("--lr", "0.3"), ("--weight-decay", "1e-05"), ("--seed", "42"), ("--zero-stage", "auto"),
                          ("--log-interval", "10")):
        start = text.index(flag + " ")
        assert f"(default: {default})" in text[start:start + 300], flag
    start = text.index("--no-deepspeed")
    assert "plain PyTorch" in text[start:start + 120]


def test_save_interval_help_says_the_last_step_and_a_stop_signal_checkpoint_with_0_too():
    _, actions = _options()
    (action,) = [a for a in actions if "--save-interval" in a.option_strings]
    assert "0: none in between" in action.help and "last step" in action.help and "stop signal" in action.help


def test_rpt_memory_and_plan_speak_rpt_trains_flags(tmp_path):
    flags = ["--model", "t5-xl", "--bf16", "--max-input-length", "512", "--zero-stage", "0", "--gpu-memory", "8GB"]
    memory = subprocess.run([sys.executable, "-m", "rpt_fast.train.memory_cli", *flags], cwd=tmp_path, env=env(),
                            capture_output=True, text=True, timeout=120)
    plan = rpt_train(tmp_path, "--plan", *flags)
    assert (memory.returncode, plan.returncode) == (1, 1), memory.stderr + plan.stderr  # does not fit: exit 1 from both
    assert memory.stdout == plan.stdout and "does not fit: about" in plan.stdout
    assert "append to the rpt-train command" in plan.stdout and "  --zero-stage 3 --offload-param cpu" in plan.stdout
    old = subprocess.run([sys.executable, "-m", "rpt_fast.train.memory_cli", "--source-length", "512"], cwd=tmp_path,
                         env=env(), capture_output=True, text=True, timeout=120)
    assert old.returncode == 2 and len(old.stderr.strip().splitlines()) == 1
    assert "--source-length: use --max-input-length" in old.stderr
    assert os.listdir(tmp_path) == []


def test_a_runs_config_json_is_a_config_file_that_reproduces_it_bit_exactly(tmp_path):
    from safetensors.torch import load_file

    run = ["--no-deepspeed", "--backend", "eager", "--num-tokens", "4", "--bottleneck", "8", "--max-train-examples",
           "32", "--batch-size", "4", "--max-eval-examples", "8", "--max-steps", "3", "--eval-interval", "0",
           "--log-interval", "1", "--lr", "0.05", "--seed", "7", "--prompt-dropout", "0.1", "--no-progress"]
    first, second = tmp_path / "first", tmp_path / "second"
    assert rpt_train(tmp_path, *run, "--output-dir", str(first)).returncode == 0
    config = str(first / "config.json")
    refused = rpt_train(tmp_path, "--config", config)  # its output_dir is the first run's, which holds a run
    assert_one_line_error(refused, f"--output-dir: {first} holds a run already")
    proc = rpt_train(tmp_path, "--config", config, "--output-dir", str(second))
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = (load_file(folder / "prompt.safetensors") for folder in (first, second))
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    losses = [[r["loss"] for r in map(json.loads, open(folder / "metrics.jsonl")) if r["type"] == "train"]
              for folder in (first, second)]
    assert losses[0] == losses[1] and len(losses[0]) == 3
    settings = json.load(open(second / "config.json"))["train"]
    assert settings == {**json.load(open(first / "config.json"))["train"], "output_dir": str(second)}


# a finished run ---------------------------------------------------------------------------------

# the built-in task with 64 training examples in batches of 4: 16 steps an epoch
FINISHED = ["--no-deepspeed", "--max-train-examples", "64", "--batch-size", "4"]


@pytest.mark.parametrize("flags, hint", [
    ([], "a larger --max-steps trains it further"),  # the default length
    (["--max-steps", "8"], "a larger --max-steps trains it further"),
    (["--epochs", "1"], "a larger --epochs trains it further"),
    (["--epochs", "1", "--max-steps", "100"], "a larger --epochs trains it further"),  # 16 < 100
    (["--epochs", "1", "--max-steps", "16"], "larger --max-steps and --epochs train it further"),
    (["--max-steps", "8", "--lr-scheduler", "linear"], "its --lr-scheduler linear schedule decayed to 0 at its last "
     "step, so a resume cannot train it further (a new run in another --output-dir can train longer)"),
])
def test_a_finished_run_names_what_would_train_it_further(tmp_path, capsys, flags, hint):
    from rpt_fast.train import checkpoint
    from rpt_fast.train.cli import main

    settings = config_from_args([*FINISHED, *flags])
    steps = settings.total_steps(16)
    (tmp_path / "config.json").write_text(json.dumps({"train": settings.to_dict()}))
    (tmp_path / "summary.json").write_text(json.dumps({"steps": steps}))
    root = str(tmp_path / "checkpoints")
    checkpoint.seal(root, checkpoint.begin(root, steps), steps)
    main(["--output-dir", str(tmp_path), "--resume"])
    assert capsys.readouterr().out.strip() == (
        f"rpt-train: the run in {tmp_path} is finished (step {steps} of {steps}); {hint}")
