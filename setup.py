"""Packaging for rpt-fast. The native extension (csrc/) is built with ninja at install when a
C++ compiler is present; otherwise rpt_fast.ops.native compiles it just in time on first use."""

from setuptools import find_packages, setup

setup(
    name="rpt-fast",
    version="0.1.0",
    description="Fused Triton/C++ kernels and DeepSpeed ZeRO-3 training for Residual Prompt Tuning",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["rpt_fast", "rpt_fast.*"]),
    package_data={"rpt_fast": ["csrc/*"]},
    python_requires=">=3.9",
    install_requires=["torch>=2.4", "numpy", "tqdm", "safetensors"],
    extras_require={
        "triton": ["triton>=3.2"],
        "train": ["transformers>=4.40", "deepspeed>=0.14", "peft>=0.11", "sentencepiece"],
        "bench": ["matplotlib", "pytest-benchmark"],
        "test": ["pytest", "pytest-xdist", "pytest-timeout", "ninja"],
    },
    entry_points={"console_scripts": ["rpt-train=rpt_fast.train.cli:main"]},
)
