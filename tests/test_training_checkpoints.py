"""Training checkpoints (pipelines.checkpoints) in the real recipes: a run killed at any moment -- while a
checkpoint's temporary file is half written, before its rename, after the rename but before the older
checkpoints are pruned, or between two checkpoints -- then resumed ends exactly where an uninterrupted run
ends (every weight, buffer and AdamW moment equal, atol 0); resume refuses a damaged checkpoint, one of
another run, and an empty directory.

The MoFME loop (pipelines.train_mofme.train_model) on the tiny config of tests.test_mofme_train: 6 steps,
a checkpoint every 2. The kills are injected failures in-process, and real SIGKILLs of a subprocess at two of those points."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.test_mofme_train import CONFIG, SETTINGS
from zoo.models.mofme import MoFMEConfig
from zoo.pipelines import checkpoints as ck
from zoo.pipelines import train_mofme
from zoo.pipelines.checkpoints import CheckpointError, Checkpoints, checkpoint_steps
from zoo.pipelines.train import TrainOptions

pytestmark = pytest.mark.usefixtures("single_thread")
SEED = 1
KILLED_AT_SAVE = 2  # the second checkpoint (step 4): an earlier one (step 2) exists to be kept


class Killed(BaseException):
    """Stands for the process dying: not an Exception, so nothing on the way catches it."""


def train(folder: Path, resume: bool = False):
    model, _, done = train_mofme.train_model(MoFMEConfig(**CONFIG), folder, SETTINGS,
                                             TrainOptions(seed=SEED, resume=resume), "test")
    assert done
    return model


def final_checkpoint(folder: Path) -> dict:
    return Checkpoints(folder / "checkpoints", {}).load(SETTINGS["steps"], check_fingerprint=False)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    folder = tmp_path_factory.mktemp("straight")
    return train(folder).state_dict(), final_checkpoint(folder)


def assert_same_run(straight, model, folder: Path) -> None:
    weights, checkpoint = straight
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, weights[name], rtol=0, atol=0, msg=lambda m, n=name: f"{n}: {m}")
    resumed = final_checkpoint(folder)
    assert resumed["scheduler"] == checkpoint["scheduler"]
    for key, state in checkpoint["optimizer"]["state"].items():
        for moment in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(resumed["optimizer"]["state"][key][moment], state[moment], rtol=0, atol=0)
    assert checkpoint_steps(folder / "checkpoints") == [4, 6]  # the last two kept, nothing else
    assert not list((folder / "checkpoints").glob(".*.tmp"))


# -- where a kill can land ----------------------------------------------------------------------------
def on_nth_save(function, n: int, before=None):
    """`function` wrapped to die (after `before()`, if given) on its n-th call during a checkpoint save."""
    calls = [0]

    def dying(*args, **kwargs):
        calls[0] += 1
        if calls[0] == n:
            if before is not None:
                before(*args)
            raise Killed(function.__name__)
        return function(*args, **kwargs)
    return dying


def half_write_then_die(temporary, path):
    data = Path(temporary).read_bytes()
    Path(temporary).write_bytes(data[: len(data) // 2])


def kill_points(monkeypatch) -> dict:
    return {
        "temporary file half written": lambda: monkeypatch.setattr(
            ck.os, "replace", on_nth_save(os.replace, KILLED_AT_SAVE, half_write_then_die)),
        "before the rename": lambda: monkeypatch.setattr(ck.os, "replace", on_nth_save(os.replace, KILLED_AT_SAVE)),
        "after the rename, before pruning": lambda: monkeypatch.setattr(
            ck, "_fsync_directory", on_nth_save(ck._fsync_directory, KILLED_AT_SAVE)),
        "between two checkpoints": lambda: monkeypatch.setattr(
            train_mofme, "sample_batch", on_nth_save(train_mofme.sample_batch, 5)),  # in step 5
    }


@pytest.mark.parametrize("point", ["temporary file half written", "before the rename", "after the rename, before pruning",
                                   "between two checkpoints"])
def test_a_run_killed_anywhere_then_resumed_ends_at_the_uninterrupted_result(straight, tmp_path, monkeypatch, point):
    kill_points(monkeypatch)[point]()
    with pytest.raises(Killed):
        train(tmp_path)
    monkeypatch.undo()
    assert checkpoint_steps(tmp_path / "checkpoints")[0] == 2  # the last good checkpoint survived the kill
    assert_same_run(straight, train(tmp_path, resume=True), tmp_path)


CHILD = """
import os, signal, sys
from pathlib import Path
import torch
torch.set_num_threads(1)
from tests.test_training_checkpoints import kill_points, train

class Patch:  # kill_points' monkeypatch: install each wrapper for good; the wrappers SIGKILL instead of raising
    def setattr(self, owner, name, value):
        setattr(owner, name, value)

import tests.test_training_checkpoints as t
class Die(BaseException):
    def __init__(self, *args):
        os.kill(os.getpid(), signal.SIGKILL)
t.Killed = Die
kill_points(Patch())[sys.argv[2]]()
train(Path(sys.argv[1]))
"""


@pytest.mark.parametrize("point", ["temporary file half written", "after the rename, before pruning"])  # ~4 s each
def test_a_sigkilled_run_resumed_ends_at_the_uninterrupted_result(straight, tmp_path, point):
    root = Path(__file__).resolve().parents[1]
    child = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path), point], cwd=root, capture_output=True, text=True,
                           timeout=300, env={**os.environ, "PYTHONPATH": str(root)})
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    assert checkpoint_steps(tmp_path / "checkpoints")[0] == 2
    assert_same_run(straight, train(tmp_path, resume=True), tmp_path)


# -- what resume refuses ------------------------------------------------------------------------------
def test_resume_refuses_a_damaged_checkpoint_and_names_the_one_to_fall_back_to(straight, tmp_path):
    train(tmp_path)
    newest = tmp_path / "checkpoints" / "checkpoint-6.pt"
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"checkpoint-6\.pt is damaged.*checkpoint-4\.pt is kept"):
        train(tmp_path, resume=True)
    newest.unlink()  # as the message says: the earlier one resumes, to the same result
    assert_same_run(straight, train(tmp_path, resume=True), tmp_path)


def test_resume_refuses_a_checkpoint_of_another_run(tmp_path):
    checkpoints = Checkpoints(tmp_path, {"steps": 6})
    param = torch.nn.Parameter(torch.zeros(3))
    optimizer = torch.optim.AdamW([param])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    checkpoints.save(2, {"p": param}, optimizer, scheduler)
    with pytest.raises(CheckpointError, match="written by another run"):
        Checkpoints(tmp_path, {"steps": 8}).resume({"p": param}, optimizer, scheduler, required=True)
    assert Checkpoints(tmp_path, {"steps": 6}).resume({"p": param}, optimizer, scheduler, required=True)[0] == 2
    (tmp_path / "checkpoint-2.pt").write_bytes(b"PK\x03\x04 not ours")
    with pytest.raises(CheckpointError, match="not a zoo training checkpoint"):
        checkpoints.resume({"p": param}, optimizer, scheduler, required=True)


def test_resume_on_an_empty_directory_is_refused_in_every_recipe(tmp_path):
    from tests.test_vl_resume import SyntheticVqa, fresh_model
    from zoo.pipelines import train_unimoe, train_vl
    from zoo.pipelines import vl_easyvqa as vqa

    with pytest.raises(FileNotFoundError, match="--resume: no checkpoint in"):
        train_mofme.train_model(MoFMEConfig(**CONFIG), tmp_path / "mofme", SETTINGS, TrainOptions(resume=True), "x")
    model = fresh_model()
    with pytest.raises(FileNotFoundError, match="--resume: no checkpoint in"):
        train_vl.run_stage(model, SyntheticVqa(), vqa.trainable_names(model), 2, 1e-2, 4, tmp_path / "vl", True, 0,
                           "x", require_checkpoint=True)
    with pytest.raises(FileNotFoundError, match="--resume: nothing to resume"):
        train_unimoe.run_recipe(None, {}, train_unimoe.TINY, tmp_path / "unimoe", resume=True)


def test_a_fresh_run_deletes_an_older_runs_checkpoints(tmp_path):
    """Without --resume the old checkpoints go: a later --resume must not pick up the older run's newer step."""
    train(tmp_path)
    model, _, done = train_mofme.train_model(MoFMEConfig(**CONFIG), tmp_path, {**SETTINGS, "pause_after": 2},
                                             TrainOptions(seed=SEED), "paused")
    assert not done and checkpoint_steps(tmp_path / "checkpoints") == [2]
