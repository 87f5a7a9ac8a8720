"""benchmarks/count_variants.py counts what Triton's launcher compiles: integers a kernel names
in ``do_not_specialize`` (rows always; d and m in the ``plain`` variant) make no new variant,
and a kernel's ``hinted`` and ``plain`` forms, which share a name, are counted apart."""

import os
from pathlib import Path

import pytest

# The counter stubs the interpreter's launches, and importing it sets TRITON_INTERPRET: only
# in a process already interpreting (conftest sets it where no GPU is present).
pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1",
                                reason="the Triton interpreter is off (TRITON_INTERPRET unset)")


@pytest.fixture
def count(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import count_variants

    return lambda cases: count_variants.count(count_variants.parse_cases(cases))


def test_unspecialised_integers_make_no_new_variant(count):
    one = count("shared:20,100,45:fp32")
    # 32 rows and d = 101, m = 47 differ from 20, 100, 45 only in integers Triton does not
    # specialise here (20 and 32 differ in divisibility by 16).
    assert count("shared:20,100,45:fp32;shared:32,100,45:fp32;shared:20,101,47:fp32") == one


def test_hinted_and_plain_forms_are_counted_apart(count):
    hinted, plain = count("shared:20,96,48:fp32"), count("shared:20,100,45:fp32")
    assert {key[1] for key in hinted} == {"hinted"} and {key[1] for key in plain} == {"plain"}
    assert count("shared:20,96,48:fp32;shared:20,100,45:fp32") == hinted | plain
