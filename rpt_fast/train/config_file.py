"""``--config FILE``: a run's settings from a YAML or JSON file, as axolotl, LLaMA-Factory and
torchtune users keep them. Keys are :class:`~rpt_fast.train.config.TrainConfig`'s field names,
as a run's ``config.json`` records them (``max_steps: 600``, ``bf16: true``); that
``config.json`` itself (``{"train": {...}, "deepspeed": {...}}``) is read too: its
``deepspeed`` part is what the run generated from the settings, a record that is not read
back. Each value is checked against the setting's type and the flag's choices; a string where a
number belongs is read as the flag reads it (PyYAML takes ``1e-5`` for a string). Paths are
relative to the working directory, as on the command line."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json

from .config import TrainConfig
from .errors import UsageError

RUN_RECORD_KEYS = ("train", "deepspeed")  # a run's config.json
_TYPES = {"int": int, "float": float, "str": str, "bool": bool, "None": type(None)}


def _read(path: str):
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise UsageError("config", f"cannot read {path!r} ({exc.strerror or exc})") from exc
    if path.endswith(".json"):
        try:
            return json.loads(text)
        except ValueError as exc:
            raise UsageError("config", f"{path} is not valid JSON ({exc})") from exc
    try:
        import yaml
    except ImportError as exc:
        raise UsageError("config", f"reading {path} as YAML needs PyYAML (pip install pyyaml), or use a .json "
                                   "file") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UsageError("config", f"{path} is not valid YAML ({' '.join(str(exc).split())})") from exc


def _unknown(path: str, keys: list[str], known) -> UsageError:
    names = []
    for key in keys:
        close = difflib.get_close_matches(str(key).replace("-", "_"), known, n=1)
        names.append(f"{key!r}" + (f" (did you mean {close[0]}?)" if close else ""))
    return UsageError("config", f"{path}: unknown setting{'s' if len(keys) > 1 else ''} {', '.join(names)}")


def _value(path: str, name: str, value, annotation: str, action):
    kinds = tuple(_TYPES[part.strip()] for part in annotation.split("|"))
    if isinstance(value, str) and action is not None and callable(action.type):
        try:
            value = action.type(value)  # as the flag reads it
        except (ValueError, TypeError, argparse.ArgumentTypeError):
            pass  # reported below as the wrong type, or by the settings' own checks
    if isinstance(value, bool):
        ok = bool in kinds
    elif isinstance(value, int):
        ok = int in kinds or float in kinds
        value = float(value) if int not in kinds and ok else value
    else:
        ok = isinstance(value, kinds)
    if not ok:
        raise UsageError("config", f"{path}: {name}: expected {annotation}, got {value!r}")
    if action is not None and action.choices is not None and value not in action.choices:
        raise UsageError("config", f"{path}: {name}: expected one of {tuple(action.choices)}, got {value!r}")
    return value


def load(path: str, parser) -> dict:
    """The settings in ``path``, each checked as its flag in ``parser`` would be; raises
    :class:`~rpt_fast.train.errors.UsageError` (``--config: FILE: ...``) naming what is wrong."""
    data = _read(path)
    if data is None:  # an empty file
        return {}
    if not isinstance(data, dict):
        raise UsageError("config", f"{path}: expected a mapping of settings (name: value), got a {type(data).__name__}")
    if isinstance(data.get("train"), dict):  # a run's config.json
        extra = [key for key in data if key not in RUN_RECORD_KEYS]
        if extra:
            raise _unknown(path, extra, RUN_RECORD_KEYS)
        data = data["train"]
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    unknown = [key for key in data if key not in fields]
    if unknown:
        raise _unknown(path, unknown, list(fields))
    actions = {action.dest: action for action in parser._actions}
    return {name: _value(path, name, value, fields[name].type, actions.get(name)) for name, value in data.items()}
