"""What a user meets when things go wrong: a damaged, foreign or unsafe checkpoint, the wrong model,
no GPU, a diverging loss, a full disk, a run killed mid-write, two runs side by side. Each is a
UserError whose message says what happened and what to do, and nothing good is lost."""

import argparse
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import count_epochs

from helpers import training
from helpers.core import checkpoint, runtime
from helpers.core.errors import UserError
from helpers.models import build_model
from helpers.models import store as runs
from helpers.results import files

ROOT = Path(__file__).resolve().parent.parent
UNPICKLED = []  # filled if loading a checkpoint ever ran code from it


def _record_unpickling(*args):
    UNPICKLED.append(args)
    return args


class Payload:
    """A class of ours: unpickling it would call `_record_unpickling`."""

    def __reduce__(self):
        return _record_unpickling, ("payload ran",)


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def good_checkpoint(tmp_path) -> Path:
    return checkpoint.save(
        {
            "model": build_model("compact_s").state_dict(),
            "arch": "compact_s",
            "num_classes": 21,
            "config": {"dataset": "demo"},
        },
        tmp_path / "good.pt",
    )


# --- damaged and foreign files -------------------------------------------------------------------


def test_a_truncated_checkpoint_is_named_and_kept(tiny_cfg):
    training.fit(tiny_cfg, "baseline", progress=False, stop_after_epoch=1)
    path = runs.checkpoint_path(tiny_cfg, "baseline")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    for attempt in (
        lambda: checkpoint.load(path),
        lambda: runs.load_model(path),
        lambda: training.fit(tiny_cfg, "baseline", progress=False),
    ):
        with pytest.raises(UserError, match="is truncated or not a PyTorch checkpoint") as e:
            attempt()
        assert str(path) in str(e.value) and "delete it and train again" in str(e.value)
    assert path.read_bytes() == data[: len(data) // 2]  # not silently replaced or deleted


@pytest.mark.parametrize(
    "content", [os.urandom(3000), b"", b"just some text\n" * 20], ids=["random-bytes", "empty", "text"]
)
def test_a_file_that_is_not_a_checkpoint_is_refused_as_such(tmp_path, content):
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(UserError, match="is truncated or not a PyTorch checkpoint") as e:
        checkpoint.load(path)
    assert str(path) in str(e.value)
    assert "arbitrary" not in str(e.value)  # random bytes are not an attack; don't say they are
    assert path.read_bytes() == content


def test_a_plain_tensor_file_is_not_a_checkpoint_of_this_project(tmp_path):
    path = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), path)
    with pytest.raises(UserError, match="is a PyTorch file but not a checkpoint of this project") as e:
        checkpoint.load(path)
    assert str(path) in str(e.value) and checkpoint.FORMAT in str(e.value)


@pytest.mark.parametrize("obj", [Payload(), argparse.Namespace(lr=0.1)], ids=["our-class", "namespace"])
def test_a_checkpoint_that_needs_arbitrary_unpickling_is_refused(tmp_path, obj):
    path = tmp_path / "unsafe.pt"
    torch.save({"format": checkpoint.FORMAT, "model": {}, "args": obj}, path)
    UNPICKLED.clear()
    with pytest.raises(UserError, match="needs unpickling of arbitrary Python objects") as e:
        checkpoint.load(path)
    msg = str(e.value)
    assert str(path) in msg and "weights_only=True" in msg
    assert ("_record_unpickling" if isinstance(obj, Payload) else "argparse.Namespace") in msg  # the culprit
    assert "\x1b[" not in msg  # no terminal escape codes from torch's text
    assert UNPICKLED == []  # nothing from the file ran


def test_a_checkpoint_of_another_architecture_is_explained(tiny_cfg, tmp_path):
    # a checkpoint whose weights don't fit the model its header names (10 classes, says 21)
    path = checkpoint.save(
        {
            "model": build_model("compact_s", 10).state_dict(),
            "arch": "compact_s",
            "num_classes": 21,
            "config": {"dataset": "demo"},
        },
        tmp_path / "odd.pt",
    )
    with pytest.raises(UserError, match="holds a 'compact_s' model with 21 classes") as e:
        runs.load_model(path)
    assert str(path) in str(e.value) and "size mismatch for classifier.weight" in str(e.value)

    # resuming a run with another student architecture than the one it was started with (refused by
    # the weights check, or earlier by a settings check that names student_arch)
    training.fit(tiny_cfg, "baseline", progress=False, stop_after_epoch=1)
    with pytest.raises(UserError, match="does not fit the model built here|trained with other settings") as e:
        training.fit(tiny_cfg.replace(student_arch="compact_l"), "baseline", progress=False)
    assert "'compact_s'" in str(e.value)
    assert checkpoint.load(runs.checkpoint_path(tiny_cfg, "baseline"))["epoch"] == 1  # kept


def test_a_good_checkpoint_loads(tmp_path):
    model, state = runs.load_model(good_checkpoint(tmp_path))
    assert state["arch"] == "compact_s" and not model.training


def test_asking_for_cuda_without_a_gpu_says_so(tiny_cfg):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    with pytest.raises(UserError, match="device='cuda' was asked for, but PyTorch sees no CUDA GPU") as e:
        runtime.resolve_device("cuda")
    assert "device='cpu'" in str(e.value)
    with pytest.raises(UserError, match="no CUDA GPU"):
        training.fit(tiny_cfg.replace(device="cuda"), "baseline", progress=False)
    assert not runs.run_dir(tiny_cfg).exists()


# --- failures during training --------------------------------------------------------------------


def test_a_diverging_loss_names_epoch_step_and_parts_and_keeps_the_last_epoch(tiny_cfg, monkeypatch):
    real = training.loop.objective
    calls = []

    def nan_at_epoch2_step2(*a, **k):
        parts = real(*a, **k)
        calls.append(1)
        if len(calls) == 3 + 2:  # 12 images / batch 4 = 3 steps per epoch
            parts["ce"] = parts["ce"] * float("nan")
            parts["loss"] = parts["ce"]
        return parts

    monkeypatch.setattr(training.loop, "objective", nan_at_epoch2_step2)
    with pytest.raises(UserError, match=r"diverged at epoch 2, step 2") as e:
        training.fit(tiny_cfg, "baseline", progress=False)
    msg = str(e.value)
    assert "'baseline'" in msg and "loss=nan" in msg and "ce=nan" in msg and "Lower lr" in msg
    path = runs.checkpoint_path(tiny_cfg, "baseline")
    state = checkpoint.load(path)
    assert state["epoch"] == 1 and not state["complete"]
    assert all(torch.isfinite(v).all() for v in state["model"].values())

    monkeypatch.setattr(training.loop, "objective", real)
    trained = count_epochs(monkeypatch)
    resumed, history = training.fit(tiny_cfg, "baseline", progress=False)
    assert history["epoch"] == [1, 2] and trained == [1]  # resumed from the kept epoch 1
    reference, _ = training.fit(tiny_cfg.replace(run_name="ref"), "baseline", progress=False)
    assert same_weights(resumed.state_dict(), reference.state_dict())


def test_a_full_disk_keeps_the_previous_checkpoint_and_no_temp_files(tiny_cfg, monkeypatch):
    real = torch.save
    calls = []

    def full_disk(obj, f, *a, **k):
        calls.append(1)
        if len(calls) == 2:  # the save after epoch 2
            f.write(b"\0" * 1000)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(obj, f, *a, **k)

    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    with pytest.raises(UserError, match="No space left on the device while writing") as e:
        training.fit(tiny_cfg, "baseline", progress=False)
    path = runs.checkpoint_path(tiny_cfg, "baseline")
    assert str(path) in str(e.value) and "previous version of that file (if any) is intact" in str(e.value)
    monkeypatch.setattr(checkpoint.torch, "save", real)
    assert checkpoint.load(path)["epoch"] == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["baseline.pt", "baseline_history.json"]
    assert json.loads(path.with_name("baseline_history.json").read_text())["epoch"] == [1]
    _, history = training.fit(tiny_cfg, "baseline", progress=False)  # frees space, runs again
    assert history["epoch"] == [1, 2]


KILLED_RUN = """
import io, json, sys, time, torch
torch.set_num_threads(1)
from helpers.core import checkpoint
from helpers import training
from helpers.config import Config
cfg = Config.from_dict(json.loads(sys.argv[1]))
real, calls = torch.save, []
def half_then_hang(obj, f, *a, **k):
    calls.append(1)
    if len(calls) == 2:  # the save after epoch 2: write half of it, then wait to be killed
        buf = io.BytesIO()
        real(obj, buf, *a, **k)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        f.flush()
        time.sleep(120)
    return real(obj, f, *a, **k)
checkpoint.torch.save = half_then_hang
training.fit(cfg, "baseline", progress=False)
"""


def test_kill_9_while_writing_a_checkpoint_then_resume(tiny_cfg, monkeypatch):
    cfg = tiny_cfg.replace(epochs=3)
    path = runs.checkpoint_path(cfg, "baseline")
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_RUN, json.dumps(cfg.to_dict())],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        temps = []
        while not temps:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the epoch-2 temp file never appeared"
            if path.exists():  # epoch 1 is saved: a temp file now is epoch 2's
                temps = [p for p in path.parent.glob(".baseline.pt.*.tmp") if p.stat().st_size > 0]
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL

    state = checkpoint.load(path)  # the previous file is whole
    assert state["epoch"] == 1 and not state["complete"]
    assert temps[0].exists()  # the killed writer's half file is there, beside it

    trained = count_epochs(monkeypatch)
    resumed, history = training.fit(cfg, "baseline", progress=False)
    assert history["epoch"] == [1, 2, 3] and trained == [1, 2]
    assert not list(path.parent.glob("*.tmp")), "stale temp file left after a later save"
    reference, _ = training.fit(cfg.replace(run_name="uninterrupted"), "baseline", progress=False)
    assert same_weights(resumed.state_dict(), reference.state_dict())


def test_two_runs_keep_to_their_own_folders(tiny_cfg):
    a, b = tiny_cfg.replace(run_name="a", epochs=1), tiny_cfg.replace(run_name="b", epochs=1)
    assert runs.checkpoint_path(a, "baseline") != runs.checkpoint_path(b, "baseline")
    training.fit(a, "baseline", progress=False)
    stamp = runs.checkpoint_path(a, "baseline").stat().st_mtime_ns
    training.fit(b, "baseline", progress=False)
    for cfg in (a, b):
        folder = runs.run_dir(cfg)
        assert sorted(p.name for p in folder.iterdir()) == ["baseline.pt", "baseline_history.json"]
        assert checkpoint.load(folder / "baseline.pt")["config"]["run_name"] == cfg.run_name
    assert runs.checkpoint_path(a, "baseline").stat().st_mtime_ns == stamp
    assert sorted(p.name for p in Path(tiny_cfg.checkpoints_dir).iterdir()) == ["a", "b"]


def test_a_checkpoint_is_readable_like_any_other_file_of_the_run(tiny_cfg):
    """Atomic writes go through mkstemp, which makes owner-only (0o600) files; ours get the mode any
    plain open() gets under the umask, so a shared checkpoints/ folder stays readable to the group."""
    old = os.umask(0o022)
    try:
        training.fit(tiny_cfg.replace(epochs=1), "baseline", progress=False)
        path = runs.checkpoint_path(tiny_cfg, "baseline")
        plain = path.with_name("plain.txt")
        plain.write_text("x")  # not through our writer
    finally:
        os.umask(old)
    assert plain.stat().st_mode & 0o777 == 0o644
    for written in (path, path.with_name("baseline_history.json")):
        assert written.stat().st_mode & 0o777 == 0o644, written.name


def test_offline_torchvision_weights_say_where_to_put_the_file(monkeypatch):
    """teacher_weights="torchvision" without internet: the message names the URL and the target path."""
    import urllib.error

    import torchvision.models._api as api

    from helpers.models import build_model

    def offline(url, *a, **k):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    with pytest.raises(UserError) as e:
        build_model("lraspp_mobilenet_v3_large", pretrained_backbone=True)
    msg = str(e.value)
    assert "mobilenet_v3_large-" in msg and "hub" in msg and "checkpoints" in msg
    assert "student_pretrained_backbone=False" in msg


def test_cuda_out_of_memory_suggests_a_smaller_batch_and_keeps_the_last_epoch(tiny_cfg, monkeypatch):
    real = training.loop.train_one_epoch

    def oom_in_epoch_2(*a, **k):
        if (a[2] if len(a) > 2 else k["epoch"]) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*a, **k)

    monkeypatch.setattr(training.loop, "train_one_epoch", oom_in_epoch_2)
    with pytest.raises(UserError, match=r"ran out of memory .* batch_size=4 .* smaller batch_size \(e\.g\. 2\)"):
        training.fit(tiny_cfg, "baseline", progress=False)
    assert checkpoint.load(runs.checkpoint_path(tiny_cfg, "baseline"))["epoch"] == 1


def test_a_full_disk_while_writing_the_report_keeps_the_previous_table(tmp_path, monkeypatch):

    rows = [
        {
            "method": m,
            "label": m,
            "miou": 0.5,
            "miou_std": None,
            "n_seeds": 1,
            "pixel_acc": 0.9,
            "iou_per_class": {},
            "params": 10,
            "params_str": "10",
            "gflops": 0.1,
            "latency_ms": 1.0,
            "latency_std_ms": 0.1,
            "arch": "a",
            "diff_vs_baseline": None,
        }
        for m in ("baseline", "response", "feature", "teacher")
    ]
    results = {
        "rows": rows,
        "latency": {"device": "cpu", "threads": 1, "dtype": "float32", "input_size": [1, 3, 8, 8], "path": "eager"},
        "protocol": "p",
        "run": "r",
    }
    paths = files.write_table_files(results, tmp_path)
    before = {p: p.read_bytes() for p in paths.values()}

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.os, "fsync", full)
    rows[0]["miou"] = 0.6
    with pytest.raises(UserError, match="No space left on the device while writing .*kd_comparison_results"):
        files.write_table_files(results, tmp_path)
    assert {p: p.read_bytes() for p in paths.values()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths.values())


@pytest.mark.parametrize(
    "args, message",
    [
        (["-p", "epoch", "3"], "Unknown parameter 'epoch' (did you mean 'epochs'?)"),
        (["-p", "epochs", "three"], "Parameter 'epochs' must be int, got 'three'"),
        (["-p", "feature_loss", "mse"], "Parameter 'feature_loss' is 'mse'; choose one of"),
    ],
)
def test_train_refuses_bad_parameters_in_one_paragraph(tmp_path, args, message, capsys):
    from helpers.cli import main

    assert main(["train", "--method", "baseline", "-p", "checkpoints_dir", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and "--debug" in err
    assert not any(tmp_path.iterdir())
