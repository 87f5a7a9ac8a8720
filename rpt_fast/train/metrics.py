"""Scores of decoded generations against target strings, as the official Residual Prompt Tuning
code computes them (arazd/ResidualPrompts, ``prompt_tuner2.py``: ``normalize_text`` 512-532,
``compute_f1``, ``compute_task_metrics``: MultiRC 601, ReCoRD 606-613), so numbers compare with the paper's.

- :func:`normalize`: SQuAD-style: lowercase, drop punctuation, drop the articles a/an/the,
  squeeze whitespace ("Mark." and "mark" match).
- :func:`accuracy`; :func:`f1_macro` (sklearn's ``f1_score(average='macro')``: the mean over
  every label seen in targets *or* predictions, so an off-vocabulary generation is a class of
  its own with F1 0); :func:`f1_micro` (``average='micro'``; for one label per example it
  equals accuracy: the official MultiRC "f1" over answer-options).
- :func:`binary_f1`: F1 of one positive label (MultiRC's F1a on the SuperGLUE leaderboard; not
  the official code's MultiRC number, so reported under its own name).
- :func:`group_exact_match`: MultiRC EM, a question counts when all its answer-options are right.
- :func:`record_scores`: ReCoRD EM and token-F1, each the max over the ``;``-separated answers.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

_ARTICLES = re.compile(r"\b(a|an|the|)\b", re.UNICODE)  # the official pattern, empty branch included
_PUNCTUATION = frozenset(string.punctuation)
RECORD_SEPARATOR = ";"


def normalize(text: str, keep: str = "") -> str:
    """The official ``normalize_text``: lowercase, strip ``<pad>``/``</s>``, remove punctuation
    except the characters in ``keep``, replace articles by spaces, squeeze whitespace."""
    text = text.lower().replace("<pad>", "").replace("</s>", "")
    text = "".join(ch for ch in text if ch not in _PUNCTUATION or ch in keep)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _pairs(predictions: Sequence[str], targets: Sequence[str], keep: str = "") -> list[tuple[str, str]]:
    if len(predictions) != len(targets):
        raise ValueError(
            f"predictions: expected one per example ({len(targets)}), got {len(predictions)}"
        )
    if not targets:
        raise ValueError("targets: expected at least one example, got none")
    return [(normalize(p, keep), normalize(t, keep)) for p, t in zip(predictions, targets)]


def accuracy(predictions: Sequence[str], targets: Sequence[str]) -> float:
    """Fraction of predictions equal to their target after normalization."""
    pairs = _pairs(predictions, targets)
    return sum(p == t for p, t in pairs) / len(pairs)


def _f1(true_pos: int, false_pos: int, false_neg: int) -> float:
    denominator = 2 * true_pos + false_pos + false_neg
    return 2 * true_pos / denominator if denominator else 0.0


def _label_counts(pairs: list[tuple[str, str]], label: str) -> tuple[int, int, int]:
    tp = sum(p == label and t == label for p, t in pairs)
    fp = sum(p == label and t != label for p, t in pairs)
    fn = sum(p != label and t == label for p, t in pairs)
    return tp, fp, fn


def binary_f1(predictions: Sequence[str], targets: Sequence[str], positive: str) -> float:
    """F1 of the class ``positive``; any other prediction counts as negative."""
    return _f1(*_label_counts(_pairs(predictions, targets), normalize(positive)))


def f1_macro(predictions: Sequence[str], targets: Sequence[str]) -> float:
    """sklearn's macro F1: the mean of per-label F1 over the labels in targets or predictions."""
    pairs = _pairs(predictions, targets)
    labels = sorted({t for _, t in pairs} | {p for p, _ in pairs})
    return sum(_f1(*_label_counts(pairs, label)) for label in labels) / len(labels)


def f1_micro(predictions: Sequence[str], targets: Sequence[str]) -> float:
    """sklearn's micro F1 over all labels: pooled tp/fp/fn (equal to accuracy here)."""
    pairs = _pairs(predictions, targets)
    labels = {t for _, t in pairs} | {p for p, _ in pairs}
    counts = [_label_counts(pairs, label) for label in labels]
    return _f1(*(sum(c[i] for c in counts) for i in range(3)))


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


def token_f1(prediction: str, truth: str) -> float:
    """The official ``compute_f1``: F1 of the normalized token *sets* (not multisets); 1 when
    both are empty, 0 when only one is."""
    pred_tokens, truth_tokens = normalize(prediction).split(), normalize(truth).split()
    if not pred_tokens or not truth_tokens:
        return float(pred_tokens == truth_tokens)
    common = set(pred_tokens) & set(truth_tokens)
    if not common:
        return 0.0
    precision, recall = len(common) / len(pred_tokens), len(common) / len(truth_tokens)
    return 2 * precision * recall / (precision + recall)


def record_scores(predictions: Sequence[str], targets: Sequence[str]) -> dict[str, float]:
    """ReCoRD: each target holds the answers joined by ``;``. Both sides are normalized keeping
    ``;`` (as the official ``preprocess_outputs``), then each answer is scored with
    :func:`normalize`-d exact match and :func:`token_f1`, keeping the best answer's."""
    pairs = _pairs(predictions, targets, keep=RECORD_SEPARATOR)
    em = f1 = 0.0
    for p, t in pairs:
        answers = t.split(RECORD_SEPARATOR)
        em += max(float(normalize(p) == normalize(a)) for a in answers)
        f1 += max(token_f1(p, a) for a in answers)
    return {"em": em / len(pairs), "f1": f1 / len(pairs)}
