"""The official Residual Prompt Tuning scores (arazd/ResidualPrompts, prompt_tuner2.py), on cases
computed by hand: SQuAD-style normalization, sklearn-style macro/micro F1, MultiRC EM and F1a,
ReCoRD max-over-answers EM and token F1, and which scores each task reports."""

import pytest

from rpt_fast.train import metrics as M
from rpt_fast.train.tasks import Example, Task


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Mark.", "mark"),
        ("  Not_Entailment \n", "notentailment"),  # "_" is punctuation too
        ("The  City\tcouncilmen", "city councilmen"),
        ("an apple, a pear and THE end!", "apple pear and end"),
        ("the", ""),
        ("true</s><pad>", "true"),
        ("Theory", "theory"),  # articles only as whole words
    ],
)
def test_normalize_is_the_official_squad_style(text, expected):
    assert M.normalize(text) == expected


def test_normalize_keeps_the_record_separator_on_request():
    # The official article pattern has an empty branch, so every word boundary gets a space.
    assert M.normalize("Obama; the U.S.", keep=";") == "obama ; us"
    assert M.normalize("Obama; the U.S.") == "obama us"


def test_accuracy_after_normalization():
    # "Mark." vs "mark" is a match (the old lowercase-only rule said no).
    assert M.accuracy(["Mark.", "the cat", "dog"], ["mark", "cat", "cats"]) == pytest.approx(2 / 3)


def test_cb_macro_f1_counts_every_label_seen_in_targets_or_predictions():
    targets = ["entailment", "entailment", "entailment", "contradiction"]
    preds = ["entailment", "neutral", "maybe", "contradiction"]
    # entailment: tp1 fn2 -> 2/4; contradiction: 1; neutral (fp1) and "maybe" (fp1): 0.
    # sklearn's macro over {contradiction, entailment, maybe, neutral}: 1.5 / 4.
    assert M.f1_macro(preds, targets) == pytest.approx(0.375)
    # Over the three CB labels only (the previous definition) it would be 1.5 / 3 = 0.5.
    per_label = [M.binary_f1(preds, targets, label) for label in ("entailment", "contradiction", "neutral")]
    assert sum(per_label) / 3 == pytest.approx(0.5)


def test_macro_f1_ignores_labels_never_seen():
    # Only "a" appears: macro over {a} is 1 (a label absent from both sides does not count).
    assert M.f1_macro(["a"], ["a"]) == 1.0


def test_multirc_f1_is_micro_over_options_and_f1a_is_separate():
    targets = ["true", "true", "false", "false", "false"]
    preds = ["true", "false", "true", "false", "false"]
    assert M.f1_micro(preds, targets) == pytest.approx(0.6)  # 3 of 5 options right
    assert M.binary_f1(preds, targets, "true") == pytest.approx(0.5)  # F1a: tp1 fp1 fn1


def test_group_exact_match_hand_checked():
    preds = ["true", "false", "true", "true", "false"]
    targets = ["true", "false", "false", "true", "false"]
    groups = ["q1", "q1", "q2", "q2", "q3"]
    assert M.group_exact_match(preds, targets, groups) == pytest.approx(2 / 3)  # q2 has a miss
    with pytest.raises(ValueError, match="every example needs a group"):
        M.group_exact_match(["a"], ["a"], [None])


def test_token_f1_uses_token_sets_like_the_official():
    assert M.token_f1("Barack Obama", "Obama") == pytest.approx(2 / 3)  # p 1/2, r 1 -> 2/3
    # Sets, not multisets: a repeated shared token counts once: p 1/2, r 1/2 -> 1/2 (SQuAD's Counter: 1).
    assert M.token_f1("obama obama", "obama obama") == pytest.approx(0.5)
    assert M.token_f1("the", "a") == 1.0  # both empty after normalization
    assert M.token_f1("the", "Obama") == 0.0


def test_record_takes_the_best_answer():
    targets = ["Barack Obama; Obama", "U.S.; United States"]
    preds = ["obama", "States"]
    scores = M.record_scores(preds, targets)
    # 1st: EM 1 against "Obama"; F1 1. 2nd: EM 0; F1 against "united states" = 2/3.
    assert scores["em"] == pytest.approx(0.5)
    assert scores["f1"] == pytest.approx((1 + 2 / 3) / 2)


def test_length_mismatch_and_empty_inputs_are_named_errors():
    with pytest.raises(ValueError, match="predictions: expected one per example"):
        M.accuracy(["x"], ["a", "b"])
    with pytest.raises(ValueError, match="targets: expected at least one example"):
        M.f1_macro([], [])


def _task(name, targets, groups=None):
    groups = groups or [None] * len(targets)
    examples = [Example("x", t, g) for t, g in zip(targets, groups)]
    return Task(name, [], examples, "score"), examples


def test_each_task_reports_the_official_scores_under_official_names():
    cb, examples = _task("cb", ["entailment", "entailment", "entailment", "contradiction"])
    scores = cb.metrics(["Entailment.", "neutral", "maybe", "contradiction"], examples)
    assert scores == pytest.approx({"accuracy": 0.5, "f1_macro": 0.375, "score": 0.4375})

    multirc, examples = _task("multirc", ["true", "true", "false", "false", "false"], ["a", "a", "b", "b", "c"])
    scores = multirc.metrics(["true", "false", "true", "false", "false"], examples)
    # EM: a wrong, b wrong, c right -> 1/3; f1 (micro) 0.6; score = mean(em, f1); f1a apart.
    assert scores == pytest.approx({"em": 1 / 3, "f1": 0.6, "score": (1 / 3 + 0.6) / 2, "f1a": 0.5})

    record, examples = _task("record", ["Barack Obama; Obama", "U.S.; United States"])
    scores = record.metrics(["obama", "States"], examples)
    assert scores == pytest.approx({"em": 0.5, "f1": (1 + 2 / 3) / 2, "score": (0.5 + (1 + 2 / 3) / 2) / 2})

    rte, examples = _task("rte", ["entailment", "entailment"])
    assert rte.metrics(["Entailment", "not_entailment"], examples) == {"accuracy": 0.5}
