"""The deployable student: `python -m helpers export`, the onnxruntime inference path, and the deployment table
(export -> onnx.checker -> ONNX Runtime -> argmax agreement with eager on real images)."""

import json

import onnx
import pytest
import torch
import torch.nn.functional as F

from helpers import perf, training
from helpers.cli import main
from helpers.data import loaders as data
from helpers.data import voc
from helpers.data.transforms import MEAN, STD, eval_transform
from helpers.models import checkpoint_path, load_model
from helpers.models.nets import build_model
from helpers.perf import deploy, export


def _val_images(cfg, n=6):
    ds = data.dataset(cfg, cfg.eval_split)
    return [ds[i][0][None] for i in range(min(n, len(ds)))]


@pytest.fixture(scope="module")
def trained(demo_root, tmp_path_factory):
    """A feature-KD student (it has an adapter, which must not be exported) trained one epoch on the tiny set."""
    from conftest import tiny_config

    tmp = tmp_path_factory.mktemp("export")
    cfg = tiny_config(tmp, demo_root, epochs=1, warmup_iters=50, monitor_every=5, students=["baseline", "feature"])
    torch.set_num_threads(1)
    training.fit(cfg, "feature", progress=False)
    return cfg


def test_export_writes_the_student_alone_checked_with_its_normalisation(trained, tmp_path, capsys):
    path, out = checkpoint_path(trained, "feature"), tmp_path / "student.onnx"
    assert torch.load(path, weights_only=True)["adapter"]  # the checkpoint holds an adapter ...
    assert main(["export", "--checkpoint", str(path), "--out", str(out), "--dynamic"]) == 0
    printed = capsys.readouterr().out
    assert "onnx.checker: passed" in printed and "argmax agreement 1.0000" in printed

    proto = onnx.load(str(out))
    onnx.checker.check_model(proto, full_check=True)
    assert [i.name for i in proto.graph.input] == ["image"] and [o.name for o in proto.graph.output] == ["logits"]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["normalisation"]) == {"mean": list(MEAN), "std": list(STD), "scale": "pixel / 255"}
    assert json.loads(meta["classes"]) == list(voc.CLASSES) and meta["method"] == "feature"
    # ... which is not in the file: its weights are the student's alone
    model = build_model("compact_s", voc.NUM_CLASSES)
    weights = sum(int(torch.tensor(list(t.dims)).prod()) for t in proto.graph.initializer)
    assert weights <= sum(t.numel() for t in [*model.parameters(), *model.buffers()])

    # run by ONNX Runtime on real val images (full resolution: dynamic axes) = eager's label maps
    student, _ = load_model(path)
    ort = export.OrtModel(out.read_bytes())
    images = _val_images(trained)
    assert perf.argmax_agreement(student, ort, images) >= perf.MIN_AGREEMENT
    with torch.inference_mode():
        assert torch.allclose(ort(images[0]), student(images[0]), atol=1e-4)


def test_export_refuses_the_teacher_and_a_wrong_file_in_one_paragraph(trained, tmp_path, capsys):
    teacher = checkpoint_path(trained, "teacher")
    assert main(["export", "--checkpoint", str(teacher), "--out", str(tmp_path / "t.onnx")]) == 2
    err = capsys.readouterr().err
    assert "holds the teacher" in err and "checkpoints/<run>/<method>.pt" in err and not (tmp_path / "t.onnx").exists()
    wrong = tmp_path / "notes.txt"
    wrong.write_text("not a checkpoint")
    assert main(["export", "--checkpoint", str(wrong), "--out", str(tmp_path / "w.onnx")]) == 2
    assert "not a PyTorch checkpoint" in capsys.readouterr().err


def test_fixed_size_export_states_its_shape(trained, tmp_path):
    info = export.export_checkpoint(checkpoint_path(trained, "feature"), tmp_path / "s.onnx", image_size=40)
    assert info["image_size"] == 40 and not info["dynamic"] and info["max_abs_diff"] < 1e-4
    dims = [d.dim_value for d in onnx.load(str(tmp_path / "s.onnx")).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 40, 40] and export.metadata(tmp_path / "s.onnx")["shape"] == "fixed (1, 3, 40, 40)"


def test_onnxruntime_path_times_beside_eager_with_the_same_labels(trained):
    student, _ = load_model(checkpoint_path(trained, "feature"))
    fast = perf.optimize_for_inference(student, "onnxruntime", (1, 3, 32, 32))
    assert perf.argmax_agreement(student, fast, _val_images(trained)) >= perf.MIN_AGREEMENT
    lat = perf.latency({"eager": student, "onnxruntime": fast}, (1, 3, 32, 32), min_run_time=0.01, rounds=2)
    assert lat["onnxruntime"]["mean_ms"] > 0 and lat["onnxruntime"]["threads"] == 1


def test_deployment_table_exports_and_times_every_path(trained, tmp_path):
    d = deploy.deployment(trained, "feature", out_dir=tmp_path, min_run_time=0.01)
    rows = {r["path"]: r for r in d["rows"]}
    assert list(rows) == ["eager", "fused", "jit", "onnxruntime", "int8"]
    assert (tmp_path / "feature.onnx").stat().st_size == pytest.approx(rows["onnxruntime"]["disk_mb"] * 1e6)
    assert rows["eager"]["speedup"] == 1.0 and rows["jit"]["disk_mb"] is None
    assert all(rows[p]["agreement"] >= perf.MIN_AGREEMENT and rows[p]["offered"] for p in perf.TABLE_PATHS)
    assert not rows["int8"]["offered"]
    text = deploy.deployment_markdown(d)
    assert "| onnxruntime |" in text and "feature.onnx" in text and "0.999" in text


def test_the_knob_offers_the_table_paths():
    from helpers.config.knobs import specs

    assert tuple(next(s for s in specs() if s.name == "inference_path").choices) == perf.TABLE_PATHS


def test_lraspp_mobilenet_v3_at_512_exports_and_agrees_on_the_real_voc_image(voc_sample, tmp_path):
    """The VOC preset's student (random weights: none can be downloaded here) at 512x512: export, check,
    latency beside eager and argmax agreement on the real VOC image."""
    torch.manual_seed(0)
    net = build_model("lraspp_mobilenet_v3_large", voc.NUM_CLASSES).eval()
    proto = export.to_onnx(net, 512)
    onnx.checker.check_model(proto, full_check=True)
    image = voc.get_dataset(voc_sample, "val", eval_transform())[0][0][None]
    image = F.interpolate(image, size=(512, 512), mode="bilinear", align_corners=False)
    ort = export.OrtModel(proto)
    assert perf.argmax_agreement(net, ort, image) >= perf.MIN_AGREEMENT
    lat = perf.latency({"eager": net, "onnxruntime": ort}, (1, 3, 512, 512), min_run_time=0.05, rounds=2, warmup=1)
    assert set(lat) == {"eager", "onnxruntime"} and all(v["mean_ms"] > 0 for v in lat.values())


@pytest.mark.parametrize("agreement", [1.0, 0.99])
def test_the_tables_column_uses_onnxruntime_only_when_it_agrees(trained, monkeypatch, agreement):
    from helpers.results import compare, notes

    student, _ = load_model(checkpoint_path(trained, "feature"))
    ds = data.dataset(trained, trained.eval_split)
    if agreement < 1:
        monkeypatch.setattr(perf, "argmax_agreement", lambda a, b, images: agreement)
    cfg = trained.replace(inference_path="onnxruntime", latency_min_time=0.01)
    lat, info = compare._latency(cfg, {"feature": student}, ["feature"], (1, 3, 32, 32), ds)
    assert lat["feature"]["mean_ms"] > 0
    text = "\n".join(notes.notes({"rows": [], "latency": {**info, "device": "cpu"}}))
    if agreement == 1:
        assert info["path"] == "onnxruntime" and info["path_agreement"] >= perf.MIN_AGREEMENT
        assert "path: onnxruntime (argmax agreement with eager fp32: 1.0000)" in text
    else:
        assert info["path"] == "eager" and "0.9900" in info["path_note"] and "so eager was timed" in text


def test_export_paths_prints_the_deployment_table(demo_root, tmp_path, capsys):
    """`export --arch A --paths --data-root R`: a random-weight student (no weights exist) exported, then every
    path timed with its agreement on R's real images; without --data-root there are no images to say so."""
    out = tmp_path / "s.onnx"
    args = ["export", "--arch", "compact_s", "--out", str(out), "--image-size", "32", "--paths"]
    assert main(args) == 2 and "needs --data-root" in capsys.readouterr().err
    assert main([*args, "--data-root", str(demo_root)]) == 0
    printed = capsys.readouterr().out
    for path in ("eager", "fused", "jit", "onnxruntime", "int8"):
        assert f"| {path} |" in printed
    assert "timed as an export with dynamic axes" in printed and out.is_file()
