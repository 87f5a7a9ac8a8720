"""Scores of decoded generations against target strings, compared after :func:`normalize`.

The SuperGLUE metrics: accuracy; CB's macro-F1 over its three label words; MultiRC's F1a
(binary F1 of the "true" answer-options over all options) and EM (a question counts when
every one of its answer-options is right).
"""

from __future__ import annotations

from collections.abc import Sequence


def normalize(text: str) -> str:
    """Lowercase, strip, and squeeze runs of whitespace to one space."""
    return " ".join(text.lower().split())


def _pairs(predictions: Sequence[str], targets: Sequence[str]) -> list[tuple[str, str]]:
    if len(predictions) != len(targets):
        raise ValueError(
            f"predictions: expected one per example ({len(targets)}), got {len(predictions)}"
        )
    if not targets:
        raise ValueError("targets: expected at least one example, got none")
    return [(normalize(p), normalize(t)) for p, t in zip(predictions, targets)]


def accuracy(predictions: Sequence[str], targets: Sequence[str]) -> float:
    """Fraction of predictions equal to their target after normalization."""
    pairs = _pairs(predictions, targets)
    return sum(p == t for p, t in pairs) / len(pairs)


def _f1(true_pos: int, false_pos: int, false_neg: int) -> float:
    denominator = 2 * true_pos + false_pos + false_neg
    return 2 * true_pos / denominator if denominator else 0.0


def binary_f1(predictions: Sequence[str], targets: Sequence[str], positive: str) -> float:
    """F1 of the class ``positive``; any other prediction counts as negative."""
    pairs = _pairs(predictions, targets)
    positive = normalize(positive)
    tp = sum(p == positive and t == positive for p, t in pairs)
    fp = sum(p == positive and t != positive for p, t in pairs)
    fn = sum(p != positive and t == positive for p, t in pairs)
    return _f1(tp, fp, fn)


def macro_f1(predictions: Sequence[str], targets: Sequence[str], labels: Sequence[str]) -> float:
    """Mean over ``labels`` of each label's F1. A prediction that is no label is a miss for the
    target's class and a false positive for none."""
    if not labels:
        raise ValueError("labels: expected at least one label word, got none")
    return sum(binary_f1(predictions, targets, label) for label in labels) / len(labels)


def group_exact_match(
    predictions: Sequence[str], targets: Sequence[str], groups: Sequence[str | None]
) -> float:
    """Fraction of groups (e.g. MultiRC questions) whose predictions are all right."""
    pairs = _pairs(predictions, targets)
    if len(groups) != len(pairs):
        raise ValueError(f"groups: expected one per example ({len(pairs)}), got {len(groups)}")
    if any(g is None for g in groups):
        raise ValueError("groups: every example needs a group for exact match, got None")
    all_right: dict[str, bool] = {}
    for (p, t), group in zip(pairs, groups):
        all_right[group] = all_right.get(group, True) and p == t
    return sum(all_right.values()) / len(all_right)
