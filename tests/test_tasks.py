"""Tasks and metrics of the training command: SuperGLUE formatting on small official-format
JSONL fixtures, the generic JSONL task, the synthetic task, and hand-checked metric values."""

import json

import pytest

from rpt_fast.train.tasks import OFFICIAL_TARGET_LEN, TASK_NAMES, Example, Task, get_task, split_halves

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
    "record": [
        {"idx": 3, "source": "Daily mail", "passage": {
            "text": "Obama met Merkel in Berlin. Obama smiled.",
            "entities": [{"start": 20, "end": 25}, {"start": 0, "end": 4}, {"start": 10, "end": 15},
                         {"start": 28, "end": 32}]},
         "qas": [{"query": "@placeholder hosted the visit.", "idx": 5,
                  "answers": [{"start": 10, "end": 15, "text": "Merkel"}, {"start": 20, "end": 25, "text": "Berlin"},
                              {"start": 10, "end": 15, "text": "Merkel"}]}]},
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
    "record": Example(
        "passage : Obama met Merkel in Berlin. Obama smiled. query: @placeholder hosted the visit. "
        "entities: Obama; Merkel; Berlin",
        "Berlin; Merkel",
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


def test_record_without_answers_is_a_clear_error(tmp_path):
    record = dict(FIXTURES["record"][0], qas=[{"query": "q @placeholder", "idx": 9, "answers": []}])
    _write(tmp_path, "train.jsonl", [record])
    _write(tmp_path, "val.jsonl", [record])
    with pytest.raises(ValueError, match="train.jsonl:1: answers: query 9 has none"):
        get_task("record", str(tmp_path))


def test_wsc_official_form_marks_the_first_word_and_targets_one_word(tmp_path):
    record = {"text": "The old man said he was tired.", "label": True, "idx": 0,
              "target": {"span1_index": 0, "span1_text": "The old man", "span2_index": 0, "span2_text": "The old man"}}
    _write(tmp_path, "train.jsonl", [record])
    _write(tmp_path, "val.jsonl", [record])
    span = get_task("wsc", str(tmp_path)).train[0]
    official = get_task("wsc", str(tmp_path), wsc_format="official").train[0]
    assert span == Example("*The old man* said he was tired.", "The old man")
    assert official == Example("*The* old man said he was tired.", "The")
    with pytest.raises(ValueError, match="wsc_format: expected one of"):
        get_task("wsc", str(tmp_path), wsc_format="t5")


def test_official_generation_lengths():
    # prompt_tuner2.py task_to_target_len minus T5's decoder start token.
    expected = {"boolq": 1, "copa": 1, "wic": 1, "wsc": 2, "cb": 4, "rte": 4, "multirc": 4, "record": 9}
    assert {name: OFFICIAL_TARGET_LEN[name] - 1 for name in OFFICIAL_TARGET_LEN} == expected
    assert get_task("synthetic").max_new_tokens is None  # falls back to max_target_length


def test_wsc_generation_length_follows_its_form(superglue_dir):
    directory = superglue_dir("wsc")
    assert get_task("wsc", directory, wsc_format="official").max_new_tokens == 2
    assert get_task("wsc", directory).max_new_tokens is None  # whole referents: max_target_length
    assert get_task("cb", superglue_dir("cb")).max_new_tokens == 4


def _labelled(tmp_path, counts):
    records = [{"input": f"{label} {i}", "target": label} for label, n in counts.items() for i in range(n)]
    _write(tmp_path, "train.jsonl", records)
    _write(tmp_path, "val.jsonl", records)
    return str(tmp_path)


def test_few_shot_takes_k_per_label_seeded(tmp_path):
    directory = _labelled(tmp_path, {"yes": 10, "no": 6, "maybe": 2})
    first = get_task("jsonl", directory, seed=3, few_shot=4)
    counts = {label: sum(e.target == label for e in first.train) for label in ("yes", "no", "maybe")}
    assert counts == {"yes": 4, "no": 4, "maybe": 2}  # a label with fewer than k keeps them all
    assert first.train == get_task("jsonl", directory, seed=3, few_shot=4).train
    assert first.train != get_task("jsonl", directory, seed=4, few_shot=4).train
    assert len(first.eval) == 18  # few-shot touches training data only


def test_few_shot_is_uniform_for_free_text_targets(tmp_path):
    records = [dict(FIXTURES["record"][0], idx=i) for i in range(6)]
    _write(tmp_path, "train.jsonl", records)
    _write(tmp_path, "val.jsonl", records)
    assert len(get_task("record", str(tmp_path), few_shot=4).train) == 4  # one target text, still k in all


def test_eval_halves_are_fixed_and_keep_questions_together(tmp_path):
    directory = _labelled(tmp_path, {"yes": 5, "no": 6})
    a, b = get_task("jsonl", directory, seed=1, eval_split="halves"), get_task("jsonl", directory, seed=2, eval_split="halves")
    assert (len(a.eval), len(a.test)) == (5, 6)
    assert a.eval == b.eval and a.test == b.test  # the same halves for every run seed
    assert sorted(e.input for e in a.eval + a.test) == sorted(e.input for e in get_task("jsonl", directory).eval)
    grouped = [Example(f"x{i}", "true", f"q{i // 3}") for i in range(12)]
    val, test = split_halves(grouped)
    assert {e.group for e in val}.isdisjoint({e.group for e in test}) and len(val) == len(test) == 6
    with pytest.raises(ValueError, match="eval_split: 'halves' needs at least 2"):
        split_halves(grouped[:3])
