"""fp32 tl.dot precision follows torch's matmul TF32 setting through either of torch's APIs.

Each case runs in its own interpreter: once torch's new API is used, the legacy flag cannot be
read again in that process."""

import subprocess
import sys

import pytest
import torch

CASES = {
    "default": ("", "ieee"),
    "legacy allow_tf32": ("torch.backends.cuda.matmul.allow_tf32 = True", "tf32"),
    "matmul fp32_precision tf32": ('torch.backends.cuda.matmul.fp32_precision = "tf32"', "tf32"),
    "matmul fp32_precision ieee": ('torch.backends.cuda.matmul.fp32_precision = "ieee"', "ieee"),
    "global fp32_precision tf32": ('torch.backends.fp32_precision = "tf32"', "tf32"),
    "global tf32, matmul ieee": (
        'torch.backends.fp32_precision = "tf32"; torch.backends.cuda.matmul.fp32_precision = "ieee"',
        "ieee",
    ),
    "set_float32_matmul_precision high": ('torch.set_float32_matmul_precision("high")', "tf32"),
}
NEW_API = hasattr(torch.backends.cuda.matmul, "fp32_precision")


@pytest.mark.parametrize("case", CASES)
def test_fp32_dot_precision_follows_torch(case):
    setup, expected = CASES[case]
    if "fp32_precision" in setup and not NEW_API:
        pytest.skip("this torch has no fp32_precision API")
    code = (
        "import torch\n"
        f"{setup}\n"
        "from rpt_fast.ops.precision import dot_precision\n"
        "print(dot_precision(torch.float32), dot_precision(torch.float16), dot_precision(torch.bfloat16))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [expected, "tf32", "tf32"]
