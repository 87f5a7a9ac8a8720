"""Tasks and metrics of the training command: SuperGLUE formatting on small official-format
JSONL fixtures, the generic JSONL task, the synthetic task, and hand-checked metric values."""

import json

import pytest

from rpt_fast.train import metrics as M
from rpt_fast.train.tasks import TASK_NAMES, Example, Task, get_task

# A few records per task in the official SuperGLUE JSONL layout.
FIXTURES = {
    "boolq": [
        {"question": "is the sky blue", "title": "Sky", "passage": "The sky is blue.", "idx": 0, "label": True},
        {"question": "is ice hot", "title": "Ice", "passage": "Ice is cold.", "idx": 1, "label": False},
    ],
    "cb": [
        {"premise": "It rained.", "hypothesis": "The ground is wet.", "label": "entailment", "idx": 0},
        {"premise": "It is sunny.", "hypothesis": "It rains.", "label": "contradiction", "idx": 1},
        {"premise": "He left.", "hypothesis": "He was sad.", "label": "neutral", "idx": 2},
    ],
    "copa": [
        {"premise": "The man broke his toe.", "choice1": "He dropped a hammer on his foot.",
         "choice2": "He got a hole in his sock.", "question": "cause", "idx": 0, "label": 0},
        {"premise": "I tipped the bottle.", "choice1": "The liquid froze.",
         "choice2": "The liquid poured out.", "question": "effect", "idx": 1, "label": 1},
    ],
    "rte": [
        {"premise": "Dana owns a cat.", "hypothesis": "Dana has a pet.", "label": "entailment", "idx": 0},
        {"premise": "Dana owns a cat.", "hypothesis": "Dana owns a dog.", "label": "not_entailment", "idx": 1},
    ],
    "wic": [
        {"word": "place", "sentence1": "Do you want to come over to my place later?",
         "sentence2": "A political system with no place for the less prominent groups.",
         "idx": 0, "label": False, "start1": 31, "start2": 27, "end1": 36, "end2": 32, "version": 1.1},
    ],
    "wsc": [
        {"text": "Mark told Pete many lies about himself, which Pete included in his book. He should have been more skeptical.",
         "target": {"span2_index": 13, "span1_index": 0, "span1_text": "Mark", "span2_text": "He"},
         "idx": 0, "label": False},
        {"text": "The city councilmen refused the demonstrators a permit because they feared violence.",
         "target": {"span2_index": 9, "span1_index": 0, "span1_text": "The city councilmen", "span2_text": "they"},
         "idx": 1, "label": True},
    ],
    "multirc": [
        {"idx": 7, "version": 1.1, "passage": {"text": "Sam ate an apple. Then he slept.", "questions": [
            {"question": "What did Sam eat?", "idx": 0, "answers": [
                {"text": "An apple", "idx": 0, "label": 1},
                {"text": "A pear", "idx": 1, "label": 0}]},
            {"question": "What did Sam do after eating?", "idx": 1, "answers": [
                {"text": "He slept", "idx": 2, "label": 1}]},
        ]}},
    ],
}

EXPECTED_FIRST = {
    "boolq": Example("passage: The sky is blue. question: is the sky blue", "true"),
    "cb": Example("premise: It rained. hypothesis: The ground is wet.", "entailment"),
    "copa": Example(
        "choice1: He dropped a hammer on his foot. choice2: He got a hole in his sock. "
        "premise: The man broke his toe. question: cause",
        "false",
    ),
    "rte": Example("premise: Dana owns a cat. hypothesis: Dana has a pet.", "entailment"),
    "wic": Example(
        "start1: 31 end1: 36 sentence1: Do you want to come over to my place later? start2: 27 "
        "end2: 32 sentence2: A political system with no place for the less prominent groups. "
        "word: place",
        "false",
    ),
    "wsc": Example(
        "The city councilmen refused the demonstrators a permit because *they* feared violence.",
        "The city councilmen",
    ),
    "multirc": Example(
        "question: What did Sam eat? answer: An apple paragraph: Sam ate an apple. Then he slept.",
        "true",
        "7-0",
    ),
}


def _write(directory, name, records):
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / name, "w") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")


@pytest.fixture
def superglue_dir(tmp_path):
    def make(task, eval_name="val.jsonl"):
        directory = tmp_path / task
        _write(directory, "train.jsonl", FIXTURES[task])
        _write(directory, eval_name, FIXTURES[task][::-1])
        return str(directory)

    return make


@pytest.mark.parametrize("task", sorted(FIXTURES))
def test_superglue_formatting(task, superglue_dir):
    loaded = get_task(task, superglue_dir(task))
    assert loaded.name == task
    assert loaded.train[0] == EXPECTED_FIRST[task]
    assert EXPECTED_FIRST[task] in loaded.eval  # the eval file holds the same records reversed


def test_superglue_label_words_and_filters(superglue_dir):
    assert [e.target for e in get_task("boolq", superglue_dir("boolq")).train] == ["true", "false"]
    assert [e.target for e in get_task("cb", superglue_dir("cb")).train] == list(
        ("entailment", "contradiction", "neutral")
    )
    assert [e.target for e in get_task("copa", superglue_dir("copa")).train] == ["false", "true"]
    rte = get_task("rte", superglue_dir("rte")).train
    assert [e.target for e in rte] == ["entailment", "not_entailment"]
    # WSC keeps only the true referents; MultiRC gives one example per answer, grouped by question.
    assert len(get_task("wsc", superglue_dir("wsc")).train) == 1
    multirc = get_task("multirc", superglue_dir("multirc")).train
    assert [(e.target, e.group) for e in multirc] == [("true", "7-0"), ("false", "7-0"), ("true", "7-1")]


@pytest.mark.parametrize("eval_name", ["val.jsonl", "validation.jsonl", "dev.jsonl"])
def test_jsonl_task(tmp_path, eval_name):
    records = [{"input": f"q {i}", "target": f"a {i}"} for i in range(5)]
    _write(tmp_path, "train.jsonl", records)
    _write(tmp_path, eval_name, records[:2] + [{"input": "x", "target": "y", "group": 3}])
    task = get_task("jsonl", str(tmp_path))
    assert task.train == [Example(f"q {i}", f"a {i}") for i in range(5)]
    assert task.eval[-1] == Example("x", "y", "3")
    assert task.primary_metric == "accuracy"


def test_max_train_and_max_eval_subsets_are_seeded(tmp_path):
    records = [{"input": f"q {i}", "target": f"a {i}"} for i in range(30)]
    _write(tmp_path, "train.jsonl", records)
    _write(tmp_path, "dev.jsonl", records)
    first = get_task("jsonl", str(tmp_path), seed=1, max_train=7, max_eval=4)
    again = get_task("jsonl", str(tmp_path), seed=1, max_train=7, max_eval=4)
    other = get_task("jsonl", str(tmp_path), seed=2, max_train=7, max_eval=4)
    assert len(first.train) == 7 and len(first.eval) == 4
    assert first.train == again.train and first.eval == again.eval
    assert first.train != other.train
    order = [int(e.input.split()[1]) for e in first.train]
    assert order == sorted(order)  # subsets keep the file order


def test_synthetic_is_deterministic_and_balanced():
    a, b, c = get_task("synthetic", seed=0), get_task("synthetic", seed=0), get_task("synthetic", seed=1)
    assert a.train == b.train and a.eval == b.eval
    assert a.train != c.train
    assert len(a.train) >= 300 * 16 and len(a.eval) >= 100
    targets = {e.target for e in a.train}
    assert {e.target for e in a.eval} <= targets
    counts = [sum(e.target == t for e in a.train) for t in sorted(targets)]
    assert max(counts) < 2 * min(counts)
    assert a.metrics([e.target for e in a.eval], a.eval)[a.primary_metric] == 1.0


@pytest.mark.parametrize(
    "files, message",
    [
        ({}, "expects train.jsonl and one of"),
        ({"train.jsonl": "{}\n", "val.jsonl": "{}\n"}, "needs the field 'premise'"),
        ({"train.jsonl": "not json\n", "val.jsonl": "{}\n"}, "train.jsonl:1: not valid JSON"),
        (
            {"train.jsonl": json.dumps({"premise": "p", "hypothesis": "h", "label": "maybe"}) + "\n",
             "val.jsonl": "\n"},
            "label: expected one of",
        ),
    ],
)
def test_bad_data_gives_clear_errors(tmp_path, files, message):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ValueError, match=message):
        get_task("cb", str(tmp_path))


def test_bad_arguments_give_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="task: expected one of"):
        get_task("glue")
    with pytest.raises(ValueError, match="data_dir: task 'rte' reads"):
        get_task("rte")
    with pytest.raises(ValueError, match="data_dir: expected a directory"):
        get_task("rte", str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="max_train: expected a positive int"):
        get_task("synthetic", max_train=0)
    task = get_task("synthetic", max_eval=3)
    with pytest.raises(ValueError, match="predictions: expected one per example"):
        task.metrics(["x"], task.eval)


def test_task_names_cover_every_loader():
    assert set(TASK_NAMES) == set(FIXTURES) | {"jsonl", "synthetic"}


def test_normalize():
    assert M.normalize("  Not_Entailment \n") == "not_entailment"
    assert M.normalize("The  City\tcouncilmen") == "the city councilmen"


def test_accuracy_normalizes():
    assert M.accuracy(["True ", "false", "yes"], ["true", "False", "no"]) == pytest.approx(2 / 3)


def test_binary_f1_hand_checked():
    # tp=2 (0, 3), fp=1 (1), fn=1 (2): precision 2/3, recall 2/3 -> F1 2/3. "maybe" is a negative.
    preds = ["true", "true", "maybe", "true", "false"]
    targets = ["true", "false", "true", "true", "false"]
    assert M.binary_f1(preds, targets, "true") == pytest.approx(2 / 3)
    assert M.binary_f1(["false"], ["false"], "true") == 0.0  # no positives at all


def test_macro_f1_hand_checked():
    preds = ["entailment", "entailment", "neutral", "contradiction", "junk"]
    targets = ["entailment", "neutral", "neutral", "contradiction", "contradiction"]
    # entailment: tp1 fp1 fn0 -> 2/3; neutral: tp1 fp0 fn1 -> 2/3; contradiction: tp1 fp0 fn1 -> 2/3
    assert M.macro_f1(preds, targets, ("entailment", "contradiction", "neutral")) == pytest.approx(2 / 3)
    # A class never predicted nor present scores 0 and still counts in the mean.
    assert M.macro_f1(["a"], ["a"], ("a", "b")) == pytest.approx(0.5)


def test_group_exact_match_hand_checked():
    preds = ["true", "false", "true", "true", "false"]
    targets = ["true", "false", "false", "true", "false"]
    groups = ["q1", "q1", "q2", "q2", "q3"]
    assert M.group_exact_match(preds, targets, groups) == pytest.approx(2 / 3)  # q2 has a miss
    with pytest.raises(ValueError, match="every example needs a group"):
        M.group_exact_match(["a"], ["a"], [None])


def test_task_metrics_per_task():
    targets = ("entailment", "neutral", "contradiction", "neutral")
    cb = Task("cb", [], [Example("x", t) for t in targets], "score")
    scores = cb.metrics(["entailment", "neutral", "neutral", "neutral"], cb.eval)
    # accuracy 3/4; F1: entailment 1, contradiction 0, neutral 2*2/(4+1) = 0.8 -> macro 0.6
    assert scores["accuracy"] == pytest.approx(0.75)
    assert scores["f1_macro"] == pytest.approx(0.6)
    assert scores["score"] == pytest.approx(0.675)

    labelled = (("true", "a"), ("false", "a"), ("true", "b"), ("false", "c"))
    examples = [Example("x", t, g) for t, g in labelled]
    multirc = Task("multirc", [], examples, "score")
    scores = multirc.metrics(["true", "false", "false", "true"], examples)
    # F1a: tp1 fp1 fn1 -> 0.5; EM: group a right, b wrong, c wrong -> 1/3
    assert scores["f1a"] == pytest.approx(0.5)
    assert scores["em"] == pytest.approx(1 / 3)
    assert scores["score"] == pytest.approx((0.5 + 1 / 3) / 2)

    rte = Task("rte", [], [Example("x", "entailment")] * 2, "accuracy")
    assert rte.metrics(["Entailment", "not_entailment"], rte.eval) == {"accuracy": 0.5}
