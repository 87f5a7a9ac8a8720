"""The memory planner: exact parameter terms vs real models, activation and ZeRO-3 estimates vs
measurements on CPU (error bounds), monotonicity, suggestions within budget, errors, CLI."""

import functools
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
    arch_from_config,
    backbone_params,
    format_plan,
    load_arch,
    format_count,
    parse_bytes,
    plan,
    trainable_params,
)
from rpt_fast.presets import t5_config
from rpt_fast.train.cli import config_from_args
from rpt_fast.train.memory_cli import main

ROOT = Path(__file__).resolve().parents[1]
CHECK = ROOT / "benchmarks" / "check_memory.py"


@functools.lru_cache(maxsize=None)
def _check_memory_module():
    spec = importlib.util.spec_from_file_location("check_memory", CHECK)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
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


@pytest.mark.parametrize("kind", ["MT5", "UMT5"])  # UMT5: a relative attention bias in every layer
def test_backbone_params_exact_for_mt5_and_umt5(kind):
    import transformers

    config = getattr(transformers, f"{kind}Config")(vocab_size=64, d_model=16, d_kv=8, d_ff=32, num_heads=2,
                                                    num_layers=3, num_decoder_layers=2)
    model = getattr(transformers, f"{kind}ForConditionalGeneration")(config)
    assert backbone_params(arch_from_config(config.to_dict())) == sum(p.numel() for p in model.parameters())


def test_config_dir_matches_preset(tmp_path):
    t5_config("t5-base").save_pretrained(tmp_path)
    assert backbone_params(load_arch(str(tmp_path))) == _real_count("t5-base", "meta")


@pytest.mark.parametrize("separate", [False, True])
def test_trainable_params_exact(separate):
    s = Setup(model="t5-tiny", num_tokens=7, bottleneck=13, separate=separate)
    encoder = ResidualPromptEncoder(7, 64, 13, separate=separate)
    assert trainable_params(64, s) == sum(p.numel() for p in encoder.parameters())


def _activation_cases():
    # t5-small's two cases (15-30 s each on two cores) are left to the script
    return [c for c in _check_memory_module().ACTIVATION_CASES if c.model != "t5-small"]


@pytest.mark.parametrize("case", _activation_cases(), ids=lambda c: c.label)
def test_activation_estimate_within_15_percent(case):
    # every family and attention, and cases where each term of the planner dominates (eager
    # attention scores, log-probs, MLP, norms, sdpa's tensors): a slip in one term fails here
    row = _check_memory_module().activation_row(case)
    assert abs(row["rel_error"]) < 0.15, row


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
    rows = json.loads(out.stdout)
    assert [row["case"].split()[0] for row in rows] == ["t5-tiny", "tiny-llama"]
    for row in rows:
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


def test_parse_bytes_requires_a_unit():
    assert parse_bytes("8GB") == parse_bytes("8g") == 8 * GIB
    assert parse_bytes("16 GiB") == 16 * GIB
    assert parse_bytes("512MB") == 512 * 2**20
    assert parse_bytes("1.5e3B") == 1500
    for bad in ("eight", "8", "1..2GB", "8 PB"):  # a bare number would be bytes, never what is meant
        with pytest.raises(ValueError, match=r"--gpu-memory: expected a size with a unit \(B, KB, MB, GB, TB"):
            parse_bytes(bad)


def test_counts_and_sizes_readable_at_every_scale():
    assert format_count(8_030_261_248) == "8,030,261,248 (8.03 billion)"
    assert format_count(222_208) == "222,208 (222 thousand)"
    assert format_count(64) == "64"
    for stage in (0, 3):  # every term has its plain words (a missing one raises KeyError)
        format_plan(plan(Setup(model="t5-xl", zero_stage=stage, world_size=2)))
    text = format_plan(plan(Setup(model="t5-tiny", bf16=False)))
    assert "222,208 (222 thousand) frozen backbone parameters" in text and "0.000" not in text
    assert " KiB" in text and " MiB" in text


def test_cli_json_and_goals(capsys):
    assert main(["--model", "t5-xl", "--gpu-memory", "8GB", "--goals", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["plan"]["backbone_params"] == backbone_params(load_arch("t5-xl"))
    assert all(g["fits"] for g in out["goals"])
    assert out["suggestions"]  # each one planned again from its own setup fits
    assert all(plan(Setup(**q["setup"]))["gpu_total"] <= 8 * GIB for q in out["suggestions"])


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


def test_cli_verdict_in_plain_words_pasteable_suggestions_and_exit_codes(capsys):
    base = ["--model", "t5-xl", "--bf16", "--max-input-length", "512", "--gpu-memory", "8GB"]
    # Settings given explicitly (the default "auto" would pick one that fits): does not fit, exit 1
    assert main([*base, "--zero-stage", "0", "--offload-param", "none"]) == 1
    text = capsys.readouterr().out
    assert "does not fit: about" in text and "8.00 GiB available" in text
    assert "backbone persistent" not in text and "allocator peak" not in text
    assert "estimated step time on NVIDIA H100 SXM5 80GB" in text  # --gpu-memory alone: an H100's rates
    lines = [line for line in text.splitlines() if line.startswith("  --")]
    assert lines and all(" per step" in line for line in lines)  # each with its estimated step time
    for planned in (["--zero-stage", "0", "--offload-param", "none"], ["--zero-stage", "3", "--offload-param", "cpu"]):
        command = [*base, "--gpu-memory", "16GB", *planned]  # both settings suggested, neither fits
        assert main(command) == 1
        lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  --")]
        assert {line.split()[1] for line in lines} == {"0", "3"}
        for line in lines:  # each line pasted after the planned command gives a run predicted to fit
            assert main([*command, *line.split("#")[0].split()]) == 0
            assert "\nfits: about" in capsys.readouterr().out
    assert main(["--model", "t5-tiny", "--gpu-memory", "1GB"]) == 0
    assert "fits: about" in capsys.readouterr().out
    # Without DeepSpeed only checkpointing and accumulation vary, and the flags say so
    assert main(["--model", "t5-small", "--no-deepspeed", "--gpu-memory", "1GB"]) == 1
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  --")]
    assert lines and all(line.startswith("  --no-deepspeed --gradient-checkpointing") for line in lines)


def test_cli_lists_settings_fastest_first_and_falls_back_to_accumulation(capsys):
    assert main(["--model", "t5-xxl", "--bf16", "--gpu-memory", "40GB", "--gpu", "a100-40gb", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["suggestions"]
    assert [q["step_time"] for q in listed] == sorted(q["step_time"] for q in listed) and len(listed) == 3
    # T5-XXL, batch 8 of input 1024, bf16, 8 GB: nothing fits whole; micro-batches of 4 do
    assert main(["--model", "t5-xxl", "--bf16", "--max-input-length", "1024", "--gpu-memory", "8GB", "--json"]) == 1
    listed = json.loads(capsys.readouterr().out)["suggestions"]
    assert listed and all("--gradient-accumulation-steps" in q["flags"] for q in listed)
    assert main(["--model", "t5-xxl", "--gpu-memory", "1GB"]) == 1
    assert "no setting tried fits (NVMe offload is tried only with --nvme-path); lower --batch-size" in capsys.readouterr().out


def test_cli_refuses_what_rpt_train_refuses(capsys):
    from rpt_fast.train.preflight import check_scale

    with pytest.raises(SystemExit) as info:
        main(["--world-size", "0"])
    assert info.value.code == 2
    assert capsys.readouterr().err == "rpt-memory: error: --world-size: expected an int >= 1, got 0\n"
    # the batch split over ranks: rpt-train's own check, the same words
    with pytest.raises(ValueError) as refused:
        check_scale(config_from_args(["--batch-size", "7"]), 2)
    with pytest.raises(SystemExit) as info:
        main(["--world-size", "2", "--batch-size", "7"])
    assert info.value.code == 2
    assert capsys.readouterr().err == f"rpt-memory: error: --{str(refused.value).replace('_', '-', 1)}\n"
    with pytest.raises(SystemExit):
        main(["--world-size", "2", "--no-deepspeed"])
    assert "--no-deepspeed: plain PyTorch trains in one process" in capsys.readouterr().err


def test_cli_output_into_a_closed_pipe_is_no_error(monkeypatch):
    # `rpt-memory ... | head -1`: the reader is gone before the output is written
    read, write = os.pipe()
    os.close(read)
    with os.fdopen(write, "w") as closed:
        monkeypatch.setattr(sys, "stdout", closed)
        assert main(["--model", "t5-tiny", "--gpu-memory", "1GB"]) == 0
        closed.flush()  # as the interpreter does at exit: nothing left that fails


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
        main(["--gpu-memory", "8"])
    assert capsys.readouterr().err == ("rpt-memory: error: --gpu-memory: expected a size with a unit "
                                       "(B, KB, MB, GB, TB; KiB ... TiB), like '80GB', got '8'\n")


def _imports(path):
    """Every import statement of a file of the repository, at any depth (a function's lazy
    imports too), as ``[module, module.name, ...]``: "from ..train import x" in
    rpt_fast/memory.py gives ``["rpt_fast.train", "rpt_fast.train.x"]`` (x may be a module or
    a name in rpt_fast.train)."""
    import ast

    parts = path.relative_to(ROOT).parent.parts  # the file's package, e.g. ("rpt_fast", "ops")
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ([alias.name] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(parts[: len(parts) - node.level + 1]) if node.level else ""
            module = ".".join(filter(None, [base, node.module]))
            yield [module, *(f"{module}.{alias.name}" for alias in node.names)]


def test_the_core_package_never_imports_the_training_package():
    # ARCHITECTURE.md: imports point down only; rpt-memory's command line lives in train/
    core = ROOT / "rpt_fast"
    offenders = []
    for path in core.rglob("*.py"):
        if (core / "train") in path.parents:
            continue
        offenders += [f"{path.relative_to(ROOT)}: {n}" for names in _imports(path) for n in names
                      if n == "rpt_fast.train" or n.startswith("rpt_fast.train.")]
    assert offenders == []


def test_no_import_cycles_inside_the_package():
    # Imports point down only, so no module of rpt_fast imports itself through others, not even
    # through a function's lazy import (cli -> memory_cli -> cli was one).
    modules = {}
    for path in (ROOT / "rpt_fast").rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    graph = {}
    for name, path in modules.items():
        edges = set()
        for module, *names in _imports(path):  # "from . import x" imports x, not the package again
            edges |= {n for n in names if n in modules} or ({module} & modules.keys())
        graph[name] = sorted(edges - {name})
    cycles, state = [], {}  # state: 1 on the current path, 2 done

    def visit(name, trail):
        state[name] = 1
        for other in graph[name]:
            if state.get(other) == 1:
                cycles.append(" -> ".join(trail[trail.index(other):] + [other]))
            elif other not in state:
                visit(other, trail + [other])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []
