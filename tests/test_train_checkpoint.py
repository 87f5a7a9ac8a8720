"""Checkpoint folders: sealed atomically, verified on load, and every kind of damage named."""

import json
import os

import pytest

from rpt_fast.train import checkpoint


def _save(root, step, payload=b"trainable state"):
    tmp = checkpoint.begin(str(root), step)
    os.makedirs(os.path.join(tmp, "engine"))
    with open(os.path.join(tmp, "engine", "optim.pt"), "wb") as handle:
        handle.write(payload)
    with open(os.path.join(tmp, "trainer_state.json"), "w") as handle:
        json.dump({"step": step}, handle)
    return checkpoint.seal(str(root), tmp, step)


def test_seal_points_latest_at_the_new_folder_and_drops_the_old(tmp_path):
    first = _save(tmp_path, 4)
    assert checkpoint.latest(str(tmp_path)) == first
    second = _save(tmp_path, 8, b"newer state")
    assert checkpoint.latest(str(tmp_path)) == second
    assert not os.path.exists(first)
    manifest = checkpoint.verify(second)
    assert manifest["step"] == 8
    assert set(manifest["files"]) == {os.path.join("engine", "optim.pt"), "trainer_state.json"}


def test_no_checkpoint_yet_is_none(tmp_path):
    assert checkpoint.latest(str(tmp_path / "checkpoints")) is None


def test_an_interrupted_save_leaves_the_previous_checkpoint_in_charge(tmp_path):
    done = _save(tmp_path, 4)
    tmp = checkpoint.begin(str(tmp_path), 8)  # crash: files written, never sealed
    with open(os.path.join(tmp, "half.pt"), "wb") as handle:
        handle.write(b"partial")
    assert checkpoint.latest(str(tmp_path)) == done
    _save(tmp_path, 12)  # the next save sweeps the leftover
    assert not any(e.startswith(".tmp-") for e in os.listdir(tmp_path))


def test_truncated_file_is_named(tmp_path):
    folder = _save(tmp_path, 4)
    path = os.path.join(folder, "engine", "optim.pt")
    with open(path, "r+b") as handle:
        handle.truncate(3)
    with pytest.raises(checkpoint.CheckpointError, match="optim.pt is truncated"):
        checkpoint.latest(str(tmp_path))


def test_corrupt_file_is_named(tmp_path):
    folder = _save(tmp_path, 4)
    path = os.path.join(folder, "trainer_state.json")
    size = os.path.getsize(path)
    with open(path, "w") as handle:
        handle.write("x" * size)  # same size, other bytes
    with pytest.raises(checkpoint.CheckpointError, match="trainer_state.json is corrupt"):
        checkpoint.latest(str(tmp_path))


def test_missing_file_and_missing_manifest_are_named(tmp_path):
    folder = _save(tmp_path, 4)
    os.remove(os.path.join(folder, "engine", "optim.pt"))
    with pytest.raises(checkpoint.CheckpointError, match="optim.pt is missing"):
        checkpoint.verify(folder)
    os.remove(os.path.join(folder, checkpoint.MANIFEST))
    with pytest.raises(checkpoint.CheckpointError, match="incomplete: MANIFEST.json is missing"):
        checkpoint.verify(folder)


def test_garbled_manifest_and_dangling_pointer_are_named(tmp_path):
    folder = _save(tmp_path, 4)
    with open(os.path.join(folder, checkpoint.MANIFEST), "w") as handle:
        handle.write("{not json")
    with pytest.raises(checkpoint.CheckpointError, match="manifest .* is corrupt"):
        checkpoint.verify(folder)
    with open(os.path.join(tmp_path, checkpoint.LATEST), "w") as handle:
        handle.write("step-00000099")
    with pytest.raises(checkpoint.CheckpointError, match="names 'step-00000099'"):
        checkpoint.latest(str(tmp_path))


def test_fingerprint_changes_name_what_changed_and_ignore_settings_an_older_version_lacked():
    from rpt_fast.train.state import fingerprint_changes

    saved = {"model": "t5-tiny", "seed": 1}  # written before chat_template existed
    assert fingerprint_changes(saved, {"model": "t5-tiny", "seed": 1, "chat_template": False}) == {}
    assert fingerprint_changes(saved, {"model": "t5-tiny", "seed": 2, "chat_template": False}) == {"seed": (1, 2)}
