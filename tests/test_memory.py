"""The memory planner: exact parameter terms vs real models, activation and ZeRO-3 estimates vs
measurements on CPU (error bounds), monotonicity, suggestions within budget, errors, CLI."""

import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from rpt_fast import ResidualPromptEncoder
from rpt_fast.memory import (
    GIB,
    Setup,
    activation_terms,
    backbone_params,
    load_arch,
    parse_bytes,
    plan,
    suggest,
    trainable_params,
)
from rpt_fast.presets import t5_config
from rpt_fast.train.memory_cli import main

ROOT = Path(__file__).resolve().parents[1]
CHECK = ROOT / "benchmarks" / "check_memory.py"


def _check_memory_module():
    spec = importlib.util.spec_from_file_location("check_memory", CHECK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _real_count(name, device):
    from transformers import T5ForConditionalGeneration

    with torch.device(device):
        model = T5ForConditionalGeneration(t5_config(name))
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", ["t5-tiny", "t5-small"])
def test_backbone_params_exact_on_cpu(name):
    assert backbone_params(load_arch(name)) == _real_count(name, "cpu")


@pytest.mark.parametrize("name", ["t5-base", "t5-large", "t5-xl", "t5-xxl"])
def test_backbone_params_exact_on_meta(name):
    assert backbone_params(load_arch(name)) == _real_count(name, "meta")


def test_config_dir_matches_preset(tmp_path):
    t5_config("t5-base").save_pretrained(tmp_path)
    assert backbone_params(load_arch(str(tmp_path))) == _real_count("t5-base", "meta")


@pytest.mark.parametrize("separate", [False, True])
def test_trainable_params_exact(separate):
    s = Setup(model="t5-tiny", num_tokens=7, bottleneck=13, separate=separate)
    encoder = ResidualPromptEncoder(7, 64, 13, separate=separate)
    assert trainable_params(64, s) == sum(p.numel() for p in encoder.parameters())


@pytest.mark.parametrize("case", [0, 3])
def test_activation_estimate_within_10_percent(case):
    check = _check_memory_module()
    name, dtype, attention, dropout, b, s, t, n = check.ACTIVATION_CASES[case]
    model = check._model(name, getattr(torch, dtype), attention, dropout)
    measured = check.measure_saved_bytes(model, b, s, t, n)
    setup = Setup(model=name, batch_size=b, source_length=s, target_length=t, num_tokens=n,
                  bf16=dtype == "bfloat16", dropout=dropout, attention=attention)
    predicted = activation_terms(load_arch(name), setup)["activations"]
    assert abs(predicted / measured - 1) < 0.10, (predicted, measured)


@pytest.mark.timeout(120)
def test_zero3_gathered_estimate_vs_deepspeed(tmp_path):
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "TORCH_EXTENSIONS_DIR": str(tmp_path / "ext"),
           "PYTHONPATH": str(ROOT)}
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    out = subprocess.run(
        [sys.executable, str(CHECK), "--zero3", "--no-activations", "--json"],
        env=env, capture_output=True, text=True, timeout=600, check=True,
    )
    (row,) = json.loads(out.stdout)
    assert row["param_dtypes"] == ["torch.float32"], row  # what the planner's bytes assume
    assert row["persistent_numel_measured"] == row["persistent_numel_predicted"]
    assert abs(row["rel_error"]) < 0.10, row


def _xl(**kw):
    return Setup(model="t5-xl", **kw)


def test_more_batch_more_memory():
    small, big = plan(_xl(batch_size=2)), plan(_xl(batch_size=4))
    assert big["gpu_terms"]["activations"] > small["gpu_terms"]["activations"]
    assert big["gpu_total"] > small["gpu_total"]


def test_checkpointing_less_activation_memory():
    off = plan(_xl(grad_checkpointing=False))["gpu_terms"]["activations"]
    on = plan(_xl(grad_checkpointing=True))["gpu_terms"]["activations"]
    assert on < off / 4


def test_offload_less_gpu_more_host():
    base = _xl(zero_stage=3, world_size=2)
    none, cpu = plan(base), plan(replace(base, offload_param="cpu"))
    assert cpu["gpu_total"] < none["gpu_total"]
    assert cpu["host_total"] > none["host_total"]
    assert plan(replace(base, zero_stage=0))["gpu_total"] > none["gpu_total"]


def test_fewer_live_parameters_less_gathered():
    hi = plan(_xl(max_live_parameters=10**9))["gpu_terms"]["backbone gathered (live)"]
    lo = plan(_xl(max_live_parameters=10**7, max_reuse_distance=0))["gpu_terms"]
    assert lo["backbone gathered (live)"] < hi


@pytest.mark.parametrize("model,gb", [("t5-xl", 8), ("t5-xxl", 16), ("t5-base", 2)])
def test_suggestions_fit_the_budget(model, gb):
    s = Setup(model=model, batch_size=8, source_length=512, num_tokens=100)
    found = suggest(s, gb * GIB)
    assert found, f"{model} should fit in {gb} GB with some setting"
    for p in found:
        assert p["gpu_total"] <= gb * GIB
        assert plan(Setup(**p["setup"]))["gpu_total"] == p["gpu_total"]


def test_nothing_fits_a_tiny_gpu():
    assert suggest(Setup(model="t5-xxl"), 0.5 * GIB) == []


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"batch_size": 0}, "batch_size: expected a positive int, got 0"),
        ({"zero_stage": 4}, "zero_stage: expected 0, 1, 2 or 3, got 4"),
        ({"offload_param": "gpu"}, "offload_param: expected 'none', 'cpu' or 'nvme', got 'gpu'"),
        ({"offload_param": "cpu", "zero_stage": 2}, "needs zero_stage 3, got zero_stage 2"),
        ({"dropout": 1.5}, r"dropout: expected a probability in \[0, 1\), got 1.5"),
        ({"model": "t5-huge"}, "model: expected a preset in"),
        ({"max_live_parameters": -1}, "max_live_parameters: expected a non-negative int, got -1"),
    ],
)
def test_bad_inputs_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        plan(Setup(**kwargs))


def test_config_dir_without_config_json(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        load_arch(str(tmp_path))


def test_parse_bytes():
    assert parse_bytes("8GB") == 8 * GIB
    assert parse_bytes("16 GiB") == 16 * GIB
    assert parse_bytes("512MB") == 512 * 2**20
    with pytest.raises(ValueError, match="--gpu-memory: expected a size"):
        parse_bytes("eight")


def test_cli_json_and_goals(capsys):
    assert main(["--model", "t5-xl", "--gpu-memory", "8GB", "--goals", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["plan"]["backbone_params"] == backbone_params(load_arch("t5-xl"))
    assert all(g["fits"] for g in out["goals"])
    assert all(p["gpu_total"] <= 8 * GIB for p in out["suggestions"])


def test_cli_speaks_rpt_trains_flags_with_the_same_meaning(capsys):
    from rpt_fast.train.cli import config_from_args

    flags = ["--model", "t5-xl", "--bf16", "--batch-size", "16", "--max-input-length", "512", "--world-size", "2",
             "--gradient-checkpointing", "--offload-param", "cpu", "--max-live-parameters", "20000000", "--json"]
    assert main(flags) == 0
    setup = json.loads(capsys.readouterr().out)["plan"]["setup"]
    assert setup["batch_size"] == 8 and setup["world_size"] == 2  # --batch-size is global, as in rpt-train
    assert (setup["source_length"], setup["target_length"]) == (512, config_from_args([]).max_target_length)
    assert setup["bf16"] and setup["grad_checkpointing"] and setup["offload_param"] == "cpu"
    assert setup["max_live_parameters"] == 20_000_000 and setup["max_reuse_distance"] == 10_000_000


def test_cli_verdict_in_plain_words_and_pasteable_suggestions(capsys):
    from rpt_fast.train.cli import config_from_args

    # Settings given explicitly (the default "auto" would pick one that fits).
    assert main(["--model", "t5-xl", "--bf16", "--max-input-length", "512", "--zero-stage", "0",
                 "--gpu-memory", "8GB"]) == 0
    text = capsys.readouterr().out
    assert "does not fit: about" in text and "8.00 GiB available" in text
    assert "backbone persistent" not in text and "allocator peak" not in text
    suggestions = [line.split("#")[0].split() for line in text.splitlines() if line.startswith("  --")]
    assert suggestions
    for flags in suggestions:  # each line pasted after the same command gives the suggested run
        cfg = config_from_args(["--model", "t5-xl", "--bf16", "--max-input-length", "512", *flags])
        assert cfg.zero_stage == 3 and cfg.offload_param in ("cpu", "nvme") and cfg.gradient_checkpointing
    assert main(["--model", "t5-tiny", "--gpu-memory", "1GB"]) == 0
    assert "fits: about" in capsys.readouterr().out


def test_cli_errors_are_one_line_naming_the_flag(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--batch-size", "0"])
    assert info.value.code == 2
    assert capsys.readouterr().err == "rpt-memory: error: --batch-size: expected an int >= 1, got 0\n"
    with pytest.raises(SystemExit) as info:
        main(["--source-length", "512"])  # rpt-memory's old spelling points to rpt-train's
    assert info.value.code == 2
    assert "--source-length: use --max-input-length" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--gpu-memory", "eight"])
    assert capsys.readouterr().err.startswith("rpt-memory: error: --gpu-memory: expected a size like '8GB'")


def test_the_core_package_never_imports_the_training_package():
    # ARCHITECTURE.md: imports point down only; rpt-memory's command line lives in train/
    import ast

    core = ROOT / "rpt_fast"
    offenders = []
    for path in core.rglob("*.py"):
        if (core / "train") in path.parents:
            continue
        parts = path.relative_to(ROOT).parent.parts  # the file's package, e.g. ("rpt_fast", "ops")
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):  # "from ..train import x" -> rpt_fast.train(.x)
                base = ".".join(parts[: len(parts) - node.level + 1]) if node.level else ""
                module = ".".join(filter(None, [base, node.module]))
                names = [module, *(f"{module}.{alias.name}" for alias in node.names)]
            else:
                continue
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names
                          if n == "rpt_fast.train" or n.startswith("rpt_fast.train.")]
    assert offenders == []
