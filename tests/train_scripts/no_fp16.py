"""Runs a script (``no_fp16.py SCRIPT ARGS``) with DeepSpeed's CPU accelerator reporting no fp16
support, as it does on CPUs without AVX512-FP16 (AMD EPYC): there ``zero.Init(dtype=...)``
ignores the dtype passed and partitions in bf16 (the precedence bug in ``Init._set_dtype``,
deepspeed/runtime/zero/partition_parameters.py), so this makes that machine's result on any
machine. The class is patched, so an accelerator instance cached before or after sees it."""

import os
import runpy
import sys

os.environ.setdefault("DS_ACCELERATOR", "cpu")

from deepspeed.accelerator import get_accelerator  # noqa: E402
from deepspeed.accelerator.cpu_accelerator import CPU_Accelerator  # noqa: E402

CPU_Accelerator.is_fp16_supported = lambda self: False
if get_accelerator().is_fp16_supported():
    raise SystemExit(f"no_fp16.py: the accelerator ({type(get_accelerator()).__name__}) still reports fp16")

sys.argv = sys.argv[1:]  # the script sees its own argv and its folder first on sys.path, as if run itself
sys.path[0] = os.path.dirname(os.path.abspath(sys.argv[0]))
runpy.run_path(sys.argv[0], run_name="__main__")
