"""Training tasks as text-to-text examples: SuperGLUE from its official JSONL files, a generic
JSONL file pair, and a built-in synthetic task.

SuperGLUE is cast the way the official Residual Prompt Tuning code (arazd/ResidualPrompts,
``t5_dataset.py``) does: the input is ``"key: value"`` for the task's fields, in this order,
joined by spaces; the target is a label word.

- boolq: ``passage: {passage} question: {question}`` -> ``false`` / ``true``
- cb: ``premise: {premise} hypothesis: {hypothesis}``
  -> ``entailment`` / ``contradiction`` / ``neutral``
- copa: ``choice1: {choice1} choice2: {choice2} premise: {premise} question: {question}``
  -> ``false`` (choice1 is right) / ``true`` (choice2 is right), the official label words
- rte: ``premise: {premise} hypothesis: {hypothesis}`` -> ``entailment`` / ``not_entailment``
- wic: ``start1: {start1} end1: {end1} sentence1: {sentence1} start2: {start2} end2: {end2}
  sentence2: {sentence2} word: {word}`` -> ``false`` / ``true``
- wsc: ``{text}`` with the pronoun (span 2) marked as ``*he*`` -> ``{span1_text}``
- multirc: ``question: {question} answer: {answer} paragraph: {paragraph}``
  -> ``false`` / ``true``, one example per answer-option
- record: ``passage : {passage} query: {query} entities: {e1}; {e2}; ...`` (the official
  spacing, ``passage :`` included) -> ``{answer1}; {answer2}; ...``, one example per query.
  Entities are the passage's unique entity strings in order of first appearance, answers the
  unique answer strings sorted (the Hugging Face loader the official code uses gives a set).

As in the official code, WSC keeps only the examples whose label is true (the model generates
the referent). Two forms (``wsc_format``):

- ``"span"`` (default): the whole span 2 is marked (``*the old man*``) and the target is the
  whole ``span1_text``. The official target, the single word at ``span1_index``, cuts
  multi-word referents, and after the official normalization (articles removed) a referent
  such as "The city councilmen" becomes the empty string, so any answer without content words
  would score as right.
- ``"official"``: the official ``process_wsc`` (``t5_dataset.py:141``): only the word at
  ``span2_index`` is marked (``*the* old man``) and the target is the word at ``span1_index``.

MultiRC examples carry ``group = "{paragraph idx}-{question idx}"`` for exact match.

Metrics (by generation, see :mod:`rpt_fast.train.metrics`) under the official code's names:
accuracy; CB ``accuracy`` and ``f1_macro``; MultiRC ``em`` and ``f1`` (micro over the
answer-options, the official number) plus ``f1a`` (the SuperGLUE leaderboard's); ReCoRD ``em``
and ``f1`` (max over answers). Tasks with two official scores also report ``score``, their mean,
which picks the best checkpoint as in the official code (``np.mean(acc_dict['score'])``).

Generation length: the official ``task_to_target_len`` (``prompt_tuner2.py:132-150``) is the
``max_length`` of T5's ``generate``, which counts the decoder's start token, so each task
generates one token less: boolq/copa/wic 1, wsc 2 (official form), cb/rte/multirc 4, record 9
new tokens (T5's SentencePiece tokens; a byte-level tokenizer needs ``--max-new-tokens``). The
synthetic and jsonl tasks, and WSC in the default form (whole referents), generate up to
``max_target_length`` tokens.

Few-shot (``few_shot=k``): k training examples per target label, drawn with ``seed`` (the
official ``select_subset_ds``, ``t5_dataset.py:118-134``); ReCoRD and WSC, whose targets are
free text, take k examples uniformly, as there. ``eval_split="halves"`` is the official
``get_test_subset`` (``t5_dataset.py:264-267``): the eval file, shuffled with a fixed seed (the
same halves for every run seed), splits into a validation half (model selection) and a test
half (scored once, with the best prompt, at the end); MultiRC splits by question.

The synthetic task: ``"{adjective} {noun}"`` -> ``yes`` when the adjective is one of four
positive ones, ``no`` for one of four negative ones (ten nouns as distractors). A frozen
random-weight ``t5-tiny`` with dropout 0 learns it by prompt tuning alone (20 tokens, lr 0.3,
batch 16): loss from ~14 to <0.1 and eval accuracy from 0 to 0.8-1.0 within 300 steps.
With the backbone's dropout at 0.1 it does not learn (loss stays ~5).

Files: ``train.jsonl`` and the first of ``val.jsonl`` (SuperGLUE's name), ``validation.jsonl``,
``dev.jsonl`` in ``data_dir``. The "jsonl" task reads records ``{"input", "target"}`` (and
an optional ``"group"``) from the same file names.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from . import metrics as M

TASK_NAMES = ("synthetic", "jsonl", "boolq", "cb", "copa", "rte", "wic", "wsc", "multirc", "record")
EVAL_FILES = ("val.jsonl", "validation.jsonl", "dev.jsonl")
CB_LABELS = ("entailment", "contradiction", "neutral")
WSC_FORMATS = ("span", "official")
EVAL_SPLITS = ("full", "halves")
# The official ``task_to_target_len``: T5 generate's max_length, decoder start token included.
OFFICIAL_TARGET_LEN = {"boolq": 2, "copa": 2, "wic": 2, "wsc": 3, "cb": 5, "rte": 5, "multirc": 5, "record": 10}
UNIFORM_FEW_SHOT = ("record", "wsc")  # free-text targets: k examples, not k per label
EVAL_SPLIT_SEED = 0  # the official shuffles validation with seed 0 before halving it


@dataclass(frozen=True)
class Example:
    input: str
    target: str
    group: str | None = None  # e.g. the MultiRC question, for exact match over groups


@dataclass
class Task:
    name: str
    train: list[Example]
    eval: list[Example]
    primary_metric: str  # the key of metrics() that picks the best checkpoint
    test: list[Example] = field(default_factory=list)  # eval_split="halves": scored once at the end
    max_new_tokens: int | None = None  # the official generation length; None: max_target_length

    def metrics(self, predictions: list[str], examples: list[Example]) -> dict[str, float]:
        """Scores decoded generations ``predictions`` against ``examples``' targets."""
        targets = [e.target for e in examples]
        if self.name == "cb":
            scores = {"accuracy": M.accuracy(predictions, targets), "f1_macro": M.f1_macro(predictions, targets)}
        elif self.name == "multirc":
            scores = {
                "em": M.group_exact_match(predictions, targets, [e.group for e in examples]),
                "f1": M.f1_micro(predictions, targets),
            }
        elif self.name == "record":
            scores = M.record_scores(predictions, targets)
        else:
            return {"accuracy": M.accuracy(predictions, targets)}
        scores["score"] = sum(scores.values()) / len(scores)
        if self.name == "multirc":
            scores["f1a"] = M.binary_f1(predictions, targets, "true")
        return scores


SYNTHETIC_POSITIVE = ("good", "great", "fine", "nice")
SYNTHETIC_NEGATIVE = ("bad", "awful", "poor", "sad")
SYNTHETIC_NOUNS = ("day", "film", "song", "meal", "trip", "book", "game", "talk", "room", "city")
SYNTHETIC_SIZES = (6400, 256)  # train (400 steps of 16), eval


def synthetic_examples(seed: int) -> tuple[list[Example], list[Example]]:
    """The synthetic task's train and eval examples, a function of ``seed`` only."""
    rng = random.Random(f"rpt-fast-synthetic-{seed}")

    def draw() -> Example:
        positive = rng.random() < 0.5
        adjective = rng.choice(SYNTHETIC_POSITIVE if positive else SYNTHETIC_NEGATIVE)
        return Example(f"{adjective} {rng.choice(SYNTHETIC_NOUNS)}", "yes" if positive else "no")

    train_size, eval_size = SYNTHETIC_SIZES
    return [draw() for _ in range(train_size)], [draw() for _ in range(eval_size)]


def _fields(record: dict, *keys: str) -> str:
    return " ".join(f"{key}: {record[key]}" for key in keys)


def _bool_word(value) -> str:
    if isinstance(value, bool) or value in (0, 1):
        return "true" if value else "false"
    raise ValueError(f"label: expected true/false or 0/1, got {value!r}")


def _label_word(value, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"label: expected one of {allowed}, got {value!r}")
    return value


def _boolq(r: dict) -> list[Example]:
    return [Example(_fields(r, "passage", "question"), _bool_word(r["label"]))]


def _cb(r: dict) -> list[Example]:
    return [Example(_fields(r, "premise", "hypothesis"), _label_word(r["label"], CB_LABELS))]


def _copa(r: dict) -> list[Example]:
    text = _fields(r, "choice1", "choice2", "premise", "question")
    return [Example(text, _bool_word(r["label"]))]


def _rte(r: dict) -> list[Example]:
    label = _label_word(r["label"], ("entailment", "not_entailment"))
    return [Example(_fields(r, "premise", "hypothesis"), label)]


def _wic(r: dict) -> list[Example]:
    keys = ("start1", "end1", "sentence1", "start2", "end2", "sentence2", "word")
    return [Example(_fields(r, *keys), _bool_word(r["label"]))]


def _wsc(r: dict, official: bool = False) -> list[Example]:
    if _bool_word(r["label"]) == "false":
        return []
    target = r["target"]
    words = r["text"].split(" ")
    start = target["span2_index"]
    end = start + 1 if official else start + len(target["span2_text"].split())
    if not 0 <= start < end <= len(words):
        raise ValueError(f"target: span2_index {start} is outside the text's {len(words)} words")
    referent = target["span1_text"]
    if official:
        index = target["span1_index"]
        if not 0 <= index < len(words):
            raise ValueError(f"target: span1_index {index} is outside the text's {len(words)} words")
        referent = words[index]
    words[start] = "*" + words[start]
    words[end - 1] = words[end - 1] + "*"
    return [Example(" ".join(words), referent)]


def _wsc_official(r: dict) -> list[Example]:
    return _wsc(r, official=True)


def _multirc(r: dict) -> list[Example]:
    passage = r["passage"]
    out = []
    for question in passage["questions"]:
        group = f"{r['idx']}-{question['idx']}"
        for answer in question["answers"]:
            text = (
                f"question: {question['question']} answer: {answer['text']} "
                f"paragraph: {passage['text']}"
            )
            out.append(Example(text, _bool_word(answer["label"]), group))
    return out


def _record(r: dict) -> list[Example]:
    passage = r["passage"]
    text = passage["text"]
    entities = list(dict.fromkeys(
        text[e["start"] : e["end"] + 1] for e in sorted(passage["entities"], key=lambda e: e["start"])
    ))
    out = []
    for qa in r["qas"]:
        answers = sorted({a["text"] for a in qa["answers"]})
        if not answers:
            raise ValueError(f"answers: query {qa.get('idx')!r} has none (the test split has no labels)")
        source = f"passage : {text} query: {qa['query']} entities: {'; '.join(entities)}"
        out.append(Example(source, "; ".join(answers)))
    return out


def _generic(r: dict) -> list[Example]:
    for key in ("input", "target"):
        if not isinstance(r[key], str):
            raise ValueError(f"{key}: expected a string, got {type(r[key]).__name__}")
    group = r.get("group")
    return [Example(r["input"], r["target"], None if group is None else str(group))]


FORMATTERS: dict[str, Callable[[dict], list[Example]]] = {
    "jsonl": _generic,
    "boolq": _boolq,
    "cb": _cb,
    "copa": _copa,
    "rte": _rte,
    "wic": _wic,
    "wsc": _wsc,
    "multirc": _multirc,
    "record": _record,
}
PRIMARY_METRIC = {"cb": "score", "multirc": "score", "record": "score"}


def _records(path: str) -> Iterator[tuple[int, dict]]:
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc


def read_examples(path: str, task: str, *, wsc_format: str = "span") -> list[Example]:
    """Formats every record of the JSONL file ``path`` as ``task`` examples."""
    formatter = _wsc_official if task == "wsc" and wsc_format == "official" else FORMATTERS[task]
    examples = []
    for lineno, record in _records(path):
        try:
            examples.extend(formatter(record))
        except KeyError as exc:
            raise ValueError(f"{path}:{lineno}: a {task} record needs the field {exc}") from exc
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path}:{lineno}: {exc}") from exc
    if not examples:
        raise ValueError(f"{path}: no {task} examples in this file")
    return examples


def _task_files(name: str, data_dir: str | None) -> tuple[str, str]:
    if data_dir is None:
        raise ValueError(
            f"data_dir: task {name!r} reads train.jsonl and val.jsonl from a directory, got None"
        )
    if not os.path.isdir(data_dir):
        raise ValueError(f"data_dir: expected a directory, got {data_dir!r}")
    train = os.path.join(data_dir, "train.jsonl")
    found = [os.path.join(data_dir, f) for f in EVAL_FILES if os.path.isfile(os.path.join(data_dir, f))]
    if not os.path.isfile(train) or not found:
        raise ValueError(
            f"data_dir: task {name!r} expects train.jsonl and one of {EVAL_FILES} in {data_dir!r}, "
            f"found {sorted(os.listdir(data_dir))}"
        )
    return train, found[0]


def _subsample(examples: list[Example], limit: int | None, rng: random.Random) -> list[Example]:
    """At most ``limit`` examples, drawn with ``rng`` and kept in file order."""
    if limit is None or limit >= len(examples):
        return examples
    keep = sorted(rng.sample(range(len(examples)), limit))
    return [examples[i] for i in keep]


def few_shot_subset(examples: list[Example], k: int, rng: random.Random, *, per_label: bool) -> list[Example]:
    """``k`` examples per target label (all of a label's when it has fewer), or ``k`` in all
    when not ``per_label``; drawn with ``rng`` and kept in file order."""
    if not per_label:
        return _subsample(examples, k, rng)
    by_label: dict[str, list[int]] = {}
    for i, example in enumerate(examples):
        by_label.setdefault(example.target, []).append(i)
    keep = []
    for label in sorted(by_label):
        indices = by_label[label]
        keep.extend(indices if k >= len(indices) else rng.sample(indices, k))
    return [examples[i] for i in sorted(keep)]


def split_halves(examples: list[Example]) -> tuple[list[Example], list[Example]]:
    """The official val/test split: shuffled with a fixed seed, the first half validates and
    the second tests. Examples sharing a ``group`` (a MultiRC question) stay together."""
    units: dict[object, list[Example]] = {}
    for i, example in enumerate(examples):
        units.setdefault(i if example.group is None else ("group", example.group), []).append(example)
    order = list(units)
    random.Random(EVAL_SPLIT_SEED).shuffle(order)
    if len(order) < 2:
        raise ValueError(f"eval_split: 'halves' needs at least 2 eval examples (or questions), got {len(order)}")
    half = len(order) // 2
    flatten = lambda keys: [e for key in keys for e in units[key]]  # noqa: E731
    return flatten(order[:half]), flatten(order[half:])


def get_task(
    name: str,
    data_dir: str | None = None,
    *,
    seed: int = 0,
    max_train: int | None = None,
    max_eval: int | None = None,
    few_shot: int | None = None,
    eval_split: str = "full",
    wsc_format: str = "span",
) -> Task:
    """Loads task ``name`` (one of ``TASK_NAMES``). ``seed`` fixes the synthetic data and the
    subsets kept by ``few_shot`` (k per label, first), ``max_train`` and ``max_eval``;
    ``eval_split="halves"`` splits the (subsampled) eval set into validation and test halves."""
    if name not in TASK_NAMES:
        raise ValueError(f"task: expected one of {TASK_NAMES}, got {name!r}")
    for arg, value in (("max_train", max_train), ("max_eval", max_eval), ("few_shot", few_shot)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{arg}: expected a positive int or None, got {value!r}")
    if eval_split not in EVAL_SPLITS:
        raise ValueError(f"eval_split: expected one of {EVAL_SPLITS}, got {eval_split!r}")
    if wsc_format not in WSC_FORMATS:
        raise ValueError(f"wsc_format: expected one of {WSC_FORMATS}, got {wsc_format!r}")
    if name == "synthetic":
        train, evaluation = synthetic_examples(seed)
    else:
        train_path, eval_path = _task_files(name, data_dir)
        train = read_examples(train_path, name, wsc_format=wsc_format)
        evaluation = read_examples(eval_path, name, wsc_format=wsc_format)
    rng = random.Random(seed)
    if few_shot is not None:
        train = few_shot_subset(train, few_shot, rng, per_label=name not in UNIFORM_FEW_SHOT)
    train = _subsample(train, max_train, rng)
    evaluation = _subsample(evaluation, max_eval, rng)
    test: list[Example] = []
    if eval_split == "halves":
        evaluation, test = split_halves(evaluation)
    official_length = name in OFFICIAL_TARGET_LEN and (name != "wsc" or wsc_format == "official")
    max_new = OFFICIAL_TARGET_LEN[name] - 1 if official_length else None  # wsc spans: whole referents
    return Task(name, train, evaluation, PRIMARY_METRIC.get(name, "accuracy"), test, max_new)
