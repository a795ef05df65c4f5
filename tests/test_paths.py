"""Notebooks behave the same in JupyterLab (kernel in notebooks/), papermill and the runner:
relative paths mean the project root, evaluation only loads models, `force` is one function,
and split names VOC lacks are refused before anything runs."""

import uuid
from pathlib import Path

import pytest

from helpers import config, training
from helpers.config import Config
from helpers.config import study as session
from helpers.core import paths
from helpers.core.errors import UserError
from helpers.models import store as runs
from helpers.report import runner

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"


def listing(folder: Path) -> set:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


# --------------------------------------------------------------------------- path resolution
def test_relative_paths_mean_the_project_root_from_any_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv(paths.ROOT_ENV, raising=False)
    for cwd in (tmp_path, NOTEBOOKS):
        monkeypatch.chdir(cwd)
        cfg = Config(
            data_root="data/x",
            checkpoints_dir="ck",
            reports_dir="rep",
            sbd_root="data/voc/SBD",
            teacher_weights="checkpoints/t.pt",
        )
        assert cfg.data_root == str(ROOT / "data" / "x") and cfg.sbd_root == str(ROOT / "data" / "voc" / "SBD")
        assert runs.checkpoint_path(cfg, "baseline") == ROOT / "ck" / "demo" / "baseline.pt"
        assert cfg.reports_dir == str(ROOT / "rep") and cfg.teacher_weights == str(ROOT / "checkpoints" / "t.pt")
        stored = cfg.to_dict()  # what a checkpoint keeps: root-relative, as written
        assert (stored["data_root"], stored["checkpoints_dir"], stored["teacher_weights"]) == (
            "data/x",
            "ck",
            "checkpoints/t.pt",
        )
        assert Config.from_dict(stored) == cfg
    elsewhere = tmp_path / "d"
    assert Config(data_root=str(elsewhere)).data_root == str(elsewhere)
    assert Config(data_root=str(elsewhere)).to_dict()["data_root"] == str(elsewhere)
    assert Config(data_root=str(ROOT / "data" / "demo")).to_dict()["data_root"] == "data/demo"
    plain = Config()
    assert (plain.teacher_weights, plain.sbd_root) == ("scratch", "")  # not paths: untouched
    assert plain.to_dict()["checkpoints_dir"] == "checkpoints"  # the notebooks' default, as before
    # one teacher, however its file is written (the key names its cache and logit files)
    assert (
        Config(teacher_weights="checkpoints/t.pt").teacher_key()
        == Config(teacher_weights=str(ROOT / "checkpoints" / "t.pt")).teacher_key()
    )


def test_the_root_can_be_moved_for_tests(tmp_path, monkeypatch):
    monkeypatch.setenv(paths.ROOT_ENV, str(tmp_path))
    monkeypatch.chdir(NOTEBOOKS)
    cfg = Config()
    assert cfg.checkpoints_dir == str(tmp_path / "checkpoints") and cfg.data_root == str(tmp_path / "data" / "demo")
    assert cfg.to_dict()["data_root"] == "data/demo"


def test_a_checkpoint_written_with_absolute_paths_is_still_reused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = Config(teacher_weights="checkpoints/teachers/t.pt")
    saved = {
        **cfg.to_dict(),
        "teacher_weights": str(ROOT / "checkpoints/teachers/t.pt"),
        "data_root": str(ROOT / "data" / "demo"),
        "checkpoints_dir": str(ROOT / "checkpoints"),
    }
    training.state.check_settings(cfg, "response", {"config": saved}, "x.pt")  # the same files: no complaint
    with pytest.raises(UserError, match=r"teacher_weights.*--force"):
        training.state.check_settings(cfg, "response", {"config": {**saved, "teacher_weights": "other.pt"}}, "x.pt")


# --------------------------------------------------------------------------- VOC split names
def test_voc_refuses_the_demo_split_names_before_anything_runs(tmp_path):
    with pytest.raises(UserError) as e:
        Config(dataset="voc", data_root=str(tmp_path / "voc"))
    msg = str(e.value)
    assert "teacher_split='teacher'" in msg and "monitor_split='holdout'" in msg
    assert "train, val, trainval" in msg and "teacher_split='train'" in msg and "monitor_split='val'" in msg
    assert "download" not in msg.lower()
    # a generated demo tree has the files, but it is not VOC: still refused
    demo = tmp_path / "demo"
    (demo / "VOCdevkit/VOC2012/ImageSets/Segmentation").mkdir(parents=True)
    (demo / "VOCdevkit/VOC2012/ImageSets/Segmentation/holdout.txt").write_text("a\n")
    (demo / "demo.json").write_text("{}")
    with pytest.raises(UserError, match="monitor_split='holdout'"):
        Config(dataset="voc", data_root=str(demo), teacher_split="train")
    # a split list of one's own in a real VOC tree is a split
    (demo / "demo.json").unlink()
    assert Config(dataset="voc", data_root=str(demo), teacher_split="train").monitor_split == "holdout"
    Config.from_dict(config.load_preset("voc"))  # the voc preset passes


def test_runner_refuses_demo_splits_on_voc_before_running(tmp_path):
    with pytest.raises(UserError, match="teacher_split='teacher'"):
        runner.run("smoke", out_dir=tmp_path / "r" / "smoke", overrides={"dataset": "voc"}, report=False)
    assert not (tmp_path / "r").exists()


# --------------------------------------------------------------------------- force
def test_forget_deletes_every_seed_of_one_method(tiny_cfg):
    cfg = tiny_cfg.replace(seeds=2)
    made = []
    for method in ("baseline", "response"):
        for s in (0, 1):
            p = runs.checkpoint_path(cfg, method, s)
            p.parent.mkdir(parents=True, exist_ok=True)
            for f in (p, p.with_name(p.stem + "_history.json")):
                f.write_text("x")
                made.append(f)
    gone = training.forget(cfg, "baseline")
    assert sorted(gone) == sorted(f for f in made if "baseline" in f.name)
    assert all(f.exists() == ("response" in f.name) for f in made)
    user_file = Path(cfg.checkpoints_dir) / "mine.pt"
    user_file.write_text("x")
    assert training.forget(cfg.replace(teacher_weights=str(user_file)), "teacher") == [] and user_file.exists()


@pytest.mark.slow
def test_train_force_on_the_command_line(tiny_cfg, demo_root, capsys):
    from helpers.cli import main

    args = ["train", "--method", "baseline", "--preset", "smoke"]
    for k in ("checkpoints_dir", "data_root", "demo_size", "crop_size", "base_size", "device", "monitor_every"):
        args += ["-p", k, str(getattr(tiny_cfg, k))]
    path = runs.checkpoint_path(tiny_cfg.replace(run_name="smoke"), "baseline")  # (the preset names the run)
    assert main(args) == 0 and path.is_file()
    first = path.stat().st_mtime_ns
    capsys.readouterr()
    assert main(args) == 2 and "--force" in capsys.readouterr().err  # refused, and says how
    assert main(args + ["--force"]) == 0 and path.stat().st_mtime_ns != first
    assert f"deleted {path}" in capsys.readouterr().out
    second = path.stat().st_mtime_ns
    assert main(args + ["-p", "force", "true"]) == 0 and path.stat().st_mtime_ns != second


# --------------------------------------------------------------------------- notebooks as JupyterLab runs them
def _execute(name: str, out: Path, params: dict):
    """Execute a notebook with its kernel in notebooks/, as JupyterLab does."""
    import papermill

    return papermill.execute_notebook(
        str(NOTEBOOKS / f"{name}.ipynb"),
        str(out / f"{name}.ipynb"),
        parameters=params,
        kernel_name="python3",
        cwd=str(NOTEBOOKS),
        progress_bar=False,
        kernel_manager_class=runner._local_kernel_manager(),
    )


@pytest.mark.slow
def test_notebooks_in_notebooks_folder_use_the_root_and_evaluation_never_trains(tmp_path, monkeypatch):
    import nbformat
    import papermill

    root = tmp_path / "root"
    monkeypatch.setenv(paths.ROOT_ENV, str(root))  # the kernels inherit it: relative paths land here
    before = listing(NOTEBOOKS)
    run_name = f"paths-{uuid.uuid4().hex[:8]}"
    params = {"preset": "smoke", "run_name": run_name, "overrides": {"device": "cpu"}}

    # 05 with nothing trained: fails, with the message alone (no traceback), and trains nothing
    with pytest.raises(papermill.PapermillExecutionError) as err:
        _execute("05_compare", tmp_path, params)
    nb = nbformat.read(tmp_path / "05_compare.ipynb", as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert len(errors) == 1
    shown = "\n".join(errors[0].traceback)
    assert f"Run '{run_name}' has no finished model" in shown and "02_baseline" in shown
    assert "python -m helpers train --method M` for M in teacher, baseline" in shown and "Traceback" not in shown
    assert not (root / "checkpoints").exists() and not (root / "data").exists()
    failure = runner._failure_message("05_compare", err.value, tmp_path / "05_compare.ipynb")
    assert f"Run '{run_name}' has no finished model" in failure

    # train the run as `make report` would (root-relative paths, the run recorded) ...
    cfg = config.from_preset("smoke", {"run_name": run_name, "device": "cpu"})
    session.record(cfg, "smoke", "test")
    for method in ("baseline", "response", "feature"):  # (the teacher is trained on the way)
        training.fit(cfg, method, progress=False)
    ckpts = root / "checkpoints"
    stamps = {p: p.stat().st_mtime_ns for p in [*ckpts.rglob("*.pt"), root / "data" / "demo-smoke" / "demo.json"]}
    assert any(p.name == "baseline.pt" for p in stamps) and any(p.parent.name == "teachers" for p in stamps)
    # ... then open 02 and 05 in "JupyterLab": no parameter given, they follow the current run
    _execute("02_baseline", tmp_path, {})
    _execute("05_compare", tmp_path, {})
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # nothing retrained or regenerated
    assert {p for p in ckpts.rglob("*.pt")} == {p for p in stamps if ckpts in p.parents}
    first = nbformat.read(tmp_path / "05_compare.ipynb", as_version=4).cells
    setup_out = "".join(o.get("text", "") for c in first if "study.start" in c.source for o in c.outputs)
    assert f"run '{run_name}' · settings: the run's record (last written by 02_baseline" in setup_out
    assert (root / "reports" / run_name / "kd_comparison_results.json").is_file()
    assert listing(NOTEBOOKS) == before  # nothing written under notebooks/


def test_compare_command_only_loads(tmp_path, capsys):
    from helpers.cli import main

    assert (
        main(
            [
                "compare",
                "--run-name",
                "nothing",
                "-p",
                "checkpoints_dir",
                str(tmp_path / "c"),
                "-p",
                "data_root",
                str(tmp_path / "d"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "Run 'nothing' has no finished model for the teacher" in err and "04_feature_kd" in err
    assert not (tmp_path / "c").exists() and not (tmp_path / "d").exists()  # nothing trained or generated
