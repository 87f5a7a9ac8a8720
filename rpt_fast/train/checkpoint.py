"""Crash-safe checkpoint folders: written under a temporary name, sealed with a manifest of
sizes and SHA-256 sums, renamed into place, then pointed to by ``latest`` (replaced
atomically). Older checkpoints beyond the newest ``keep`` (``--save-total-limit``) are removed
only after that, so a crash at any moment leaves a complete one to resume from; loading re-checks the manifest and names any bad file.

Each rank hashes the files it wrote itself (:func:`describe`) and rank 0 builds the manifest
from what every rank reported, checking that it sees each file at the reported size: on a
network filesystem rank 0's own directory listing of files other nodes just wrote can be
stale. The output folder must be on a filesystem every node shares (checked at start-up by
:func:`rpt_fast.train.shared_fs.require_shared`).

Layout of ``<output-dir>/checkpoints/``::

    step-00000040/      MANIFEST.json + the files the trainer wrote (one set per rank)
    latest              "step-00000040"
    .tmp-step-00000050/ a save in progress (or one a crash interrupted; removed on next save)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil

FOLDER = "checkpoints"  # <output-dir>/checkpoints/
MANIFEST = "MANIFEST.json"
LATEST = "latest"
_TMP_PREFIX = ".tmp-"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete, truncated or corrupt; the message names the file."""


def step_name(step: int) -> str:
    return f"step-{step:08d}"


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_file(path: str) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(os.path.dirname(path))


def _files(folder: str) -> list[str]:
    found = []
    for dirpath, _, filenames in os.walk(folder):
        for filename in filenames:
            found.append(os.path.relpath(os.path.join(dirpath, filename), folder))
    return sorted(f for f in found if f != MANIFEST)


# Files named for a rank belong to it (DeepSpeed's per-rank shards, the RNG states); the rest to
# rank 0.
_OWNER = re.compile(r"(?:zero_pp_rank_|rng_rank)0*(\d+)")


def owner(rel: str) -> int:
    found = _OWNER.search(os.path.basename(rel))
    return int(found.group(1)) if found else 0


def describe(tmp: str, rank: int) -> dict:
    """Size and SHA-256 of the files rank ``rank`` wrote into ``tmp`` (fsynced first)."""
    files = {}
    for rel in _files(tmp):
        if owner(rel) == rank:
            path = os.path.join(tmp, rel)
            _fsync_file(path)
            files[rel] = {"size": os.path.getsize(path), "sha256": _sha256(path)}
    return files


def begin(root: str, step: int) -> str:
    """Creates a fresh temporary folder for the save of ``step`` (rank 0 only; callers
    barrier afterwards) and removes leftovers of interrupted saves."""
    os.makedirs(root, exist_ok=True)
    for entry in os.listdir(root):
        if entry.startswith(_TMP_PREFIX):
            shutil.rmtree(os.path.join(root, entry), ignore_errors=True)
    tmp = os.path.join(root, _TMP_PREFIX + step_name(step))
    os.makedirs(tmp)
    return tmp


def seal(root: str, tmp: str, step: int, files: dict | None = None, keep: int = 1) -> str:
    """Rank 0, after every rank wrote its files into ``tmp``: writes the manifest (``files``,
    gathered from every rank's :func:`describe`; None: rank 0 lists and hashes ``tmp`` itself),
    renames the folder into place, points ``latest`` at it, and only then deletes older
    checkpoints beyond the ``keep`` newest."""
    if files is None:
        files = describe_all(tmp)
    for rel, expected in sorted(files.items()):
        path = os.path.join(tmp, rel)
        if not os.path.isfile(path) or os.path.getsize(path) != expected["size"]:
            raise CheckpointError(
                f"checkpoint file {path} ({expected['size']} bytes, written by rank {owner(rel)}) is not visible to "
                "rank 0 at that size: is the output folder on a filesystem every node shares?"
            )
    manifest = {"step": step, "files": files}
    _write_atomic(os.path.join(tmp, MANIFEST), json.dumps(manifest, indent=1, sort_keys=True))
    final = os.path.join(root, step_name(step))
    if os.path.exists(final):
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync_dir(root)
    _write_atomic(os.path.join(root, LATEST), step_name(step))
    older = sorted(e for e in os.listdir(root) if e.startswith("step-") and e != step_name(step))
    for entry in older[: max(0, len(older) - (keep - 1))]:  # zero-padded names sort by step
        shutil.rmtree(os.path.join(root, entry), ignore_errors=True)
    return final


def describe_all(tmp: str) -> dict:
    """Every file in ``tmp``, whichever rank wrote it (one process, or tests)."""
    files = {}
    for rel in _files(tmp):
        path = os.path.join(tmp, rel)
        _fsync_file(path)
        files[rel] = {"size": os.path.getsize(path), "sha256": _sha256(path)}
    return files


def verify(folder: str) -> dict:
    """Checks every file against the manifest; returns the manifest or raises CheckpointError."""
    manifest_path = os.path.join(folder, MANIFEST)
    if not os.path.isfile(manifest_path):
        raise CheckpointError(f"checkpoint {folder} is incomplete: {MANIFEST} is missing")
    try:
        with open(manifest_path, encoding="utf-8") as handle:
            manifest = json.load(handle)
        files = manifest["files"]
        step = int(manifest["step"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"checkpoint manifest {manifest_path} is corrupt ({exc})") from exc
    for rel, expected in files.items():
        path = os.path.join(folder, rel)
        if not os.path.isfile(path):
            raise CheckpointError(f"checkpoint file {path} is missing")
        size = os.path.getsize(path)
        if size != expected["size"]:
            raise CheckpointError(
                f"checkpoint file {path} is truncated or altered: {size} bytes, expected {expected['size']}"
            )
        if _sha256(path) != expected["sha256"]:
            raise CheckpointError(f"checkpoint file {path} is corrupt: its SHA-256 does not match the manifest")
    manifest["step"] = step
    return manifest


def _pointed_to(root: str) -> str | None:
    """The folder name ``latest`` holds; None when no checkpoint was ever sealed."""
    pointer = os.path.join(root, LATEST)
    if not os.path.isfile(pointer):
        return None
    with open(pointer, encoding="utf-8") as handle:
        name = handle.read().strip()
    if not re.fullmatch(r"step-\d+", name) or not os.path.isdir(os.path.join(root, name)):
        raise CheckpointError(f"checkpoint pointer {pointer} names {name!r}, which is not a checkpoint folder")
    return name


def latest(root: str) -> str | None:
    """The folder ``latest`` points to, verified; None when no checkpoint was ever sealed."""
    name = _pointed_to(root)
    if name is None:
        return None
    folder = os.path.join(root, name)
    verify(folder)
    return folder


def latest_step(root: str) -> int | None:
    """The step of the checkpoint ``latest`` points to, without reading the checkpoint (cheap,
    for decisions before a run starts; :func:`latest` verifies it); None when there is none."""
    name = _pointed_to(root)
    return None if name is None else int(name[len("step-"):])
