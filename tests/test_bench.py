"""The performance bench (`python -m helpers bench`): one tiny run writes a complete, well-formed
bench.json whose faster inference paths compute what eager fp32 computes. Timings are not
asserted (they depend on the machine); only that they are measured and finite."""

import inspect
import json
import math

import pytest
import torch

from helpers import cli as cli
from helpers import perf
from helpers.core import checkpoint
from helpers.data import loaders as data
from helpers.models import build_model
from helpers.models import store as runs
from helpers.perf import bench as bench_cmd
from helpers.perf import throughput

pytestmark = pytest.mark.slow

KINDS = ("baseline", "response", "response_cached", "feature")


def positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.fixture(scope="module")
def bench(demo_root, tmp_path_factory):
    """One tiny bench on the smoke preset, data and checkpoints redirected to tmp folders."""
    tmp = tmp_path_factory.mktemp("bench")
    overrides = {
        "data_root": str(demo_root),
        "demo_size": 32,
        "crop_size": 32,
        "base_size": 32,
        "checkpoints_dir": str(tmp / "ckpt"),
    }
    # a "trained" student with non-trivial BatchNorm statistics, so Conv+BN folding has work to do
    cfg = bench_cmd.make_config("smoke", overrides)
    torch.manual_seed(3)
    student = build_model(cfg.student_arch)
    with torch.no_grad():
        for m in student.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    ckpt = runs.checkpoint_path(cfg, "baseline")
    checkpoint.save(
        {"arch": cfg.student_arch, "num_classes": 21, "model": student.state_dict(), "complete": True}, ckpt
    )
    out = tmp / "reports" / "bench.json"
    result = bench_cmd.main(
        "cpu",
        image_size=32,
        batch_size=4,
        out=out,
        preset="smoke",
        overrides=overrides,
        rounds=2,
        steps=1,
        warmup=1,
        data_steps=3,
        workers=(0, 1),
        epoch_images=8,
        epoch_rounds=1,
        latency_rounds=2,
        latency_min_time=0.01,
        agreement_images=3,
        threads=1,
        verbose=False,
    )
    return result, out, ckpt


def test_bench_writes_a_complete_bench_json(bench):
    result, out, ckpt = bench
    written = json.loads(out.read_text())
    assert written == json.loads(json.dumps(result))  # what main returns is what it wrote
    r = written
    assert (r["device"], r["image_size"], r["batch_size"], r["threads"]) == ("cpu", 32, 4, 1)
    assert r["torch"] == torch.__version__
    assert r["models"] == {"student": "compact_s", "teacher": "compact_l"}
    assert r["weights"]["student"] == str(ckpt)  # the run's finished student was used
    assert r["weights"]["teacher"] == "random init"  # no teacher trained: nothing downloaded
    assert set(r["train_images_per_s"]) == set(KINDS)
    assert all(positive(v) for v in r["train_images_per_s"].values())
    assert positive(r["teacher_images_per_s"])
    assert set(r["kd_overhead"]) == {"response", "response_cached", "feature"}
    assert all(positive(v) for v in r["kd_overhead"].values())
    assert set(r["efficiency"]) == {"response", "feature"}
    assert all(positive(v) for v in r["efficiency"].values())
    assert set(r["data_wait_share"]) == {"workers=0", "workers=1"}
    assert all(0 < v < 1 for v in r["data_wait_share"].values())
    assert r["data_wait"]["workers=0"]["steps"] == 3  # after one start-up step, left out
    ce = r["cached_epoch"]  # real epochs: baseline vs cached response KD
    assert ce["images"] == 8 and positive(ce["cache_pass_s"]) and positive(ce["ratio"])
    assert set(ce["epoch_s"]) == {"baseline", "response_cached"} and all(map(positive, ce["epoch_s"].values()))
    for name in (f"{role}/{path}" for role in ("student", "teacher") for path in perf.TABLE_PATHS):
        assert positive(r["latency_ms"][name]["mean"]), name
        assert math.isfinite(r["latency_ms"][name]["std"]), name
    assert set(r["gflop_per_s"]) == set(r["latency_ms"])
    assert all(positive(v) for v in r["gflop_per_s"].values())
    assert positive(r["gflops"]["student"]) and r["gflops"]["teacher"] > r["gflops"]["student"]
    assert "student/int8" in r["argmax_agreement"]  # compact student on CPU: int8 is tried
    assert r["agreement_split"] == "val" and "multiply-add counted as 2" in r["flop_convention"]
    assert r["cuda_peak_mem_mb"] is None
    table = bench_cmd.format_table(r)  # what the CLI prints
    assert all(
        k in table
        for k in KINDS
        + (
            "workers=1",
            "student/jit",
            "student/onnxruntime",
            "teacher/eager",
            "cached response-KD epoch",
            r["flop_convention"],
            "on 3 real val images",
        )
    )


def test_compiled_paths_agree_with_eager_on_real_images(bench):
    agreement = bench[0]["argmax_agreement"]
    for name in (f"{role}/{path}" for role in ("student", "teacher") for path in perf.TABLE_PATHS[1:]):
        assert agreement[name] >= perf.MIN_AGREEMENT, (name, agreement[name])
    assert bench[0]["agreement_images"] == 3


def test_synthetic_batches_have_void_and_cached_logits():
    plain, cached = throughput.synthetic_batches(2, batch_size=3, image_size=16, seed=1)
    images, masks = plain[0]
    assert images.shape == (3, 3, 16, 16) and masks.shape == (3, 16, 16) and masks.dtype == torch.int64
    valid = masks[masks != 255]
    assert (masks == 255).any() and valid.min() >= 0 and valid.max() <= 20
    _, _, maps, geometry = cached[0]
    assert cached[0][0] is images and maps.shape == (3, 21, 4, 4) and maps.dtype == torch.float16
    # the geometry of the whole image: sampling the map is its bilinear upsampling
    from helpers.data.transforms import sample_cached

    up = torch.nn.functional.interpolate(maps.float(), size=(16, 16), mode="bilinear", align_corners=False)
    assert torch.allclose(sample_cached(maps, geometry, (16, 16)), up, atol=1e-5)


def test_cli_bench_arguments_reach_perf_main(monkeypatch, tmp_path):
    seen = {}
    real = inspect.signature(bench_cmd.main)
    monkeypatch.setattr(bench_cmd, "main", lambda **kw: seen.update(kw))
    cli.main(
        [
            "bench",
            "--device",
            "cpu",
            "--image-size",
            "48",
            "--batch-size",
            "8",
            "--preset",
            "smoke",
            "--out",
            str(tmp_path / "b.json"),
        ]
    )
    real.bind(**seen)  # every argument the CLI passes is one main accepts
    assert (seen["image_size"], seen["batch_size"], seen["preset"]) == (48, 8, "smoke")
    assert str(seen["out"]) == str(tmp_path / "b.json")


def test_agreement_is_measured_on_real_val_images_with_the_tables_path_function(tiny_cfg, monkeypatch):
    """The table's latency column times costs.optimize_for_inference(model, cfg.inference_path, size);
    the bench's agreement must come from that same function, on real eval_split images (not noise)."""
    from helpers import perf as bench_mod

    built, seen = [], []
    real_opt, real_agree = bench_mod.optimize_for_inference, bench_mod.argmax_agreement
    monkeypatch.setattr(
        bench_mod,
        "optimize_for_inference",
        lambda net, path, *a, **k: built.append(path) or real_opt(net, path, *a, **k),
    )
    monkeypatch.setattr(
        bench_mod, "argmax_agreement", lambda a, b, images: seen.append(list(images)) or real_agree(a, b, images)
    )
    student, teacher = build_model("compact_s").eval(), build_model("compact_l").eval()
    r = bench_cmd.inference(
        student,
        teacher,
        tiny_cfg,
        torch.device("cpu"),
        32,
        threads=1,
        rounds=1,
        min_run_time=0.01,
        images=3,
        int8=False,
    )
    assert built == list(bench_mod.TABLE_PATHS) * 2
    val = data.dataset(tiny_cfg, tiny_cfg.eval_split)
    for images in seen:
        assert len(images) == 3 and all(torch.equal(x[0], val[i][0]) for i, x in enumerate(images))
    assert r["agreement_split"] == "val" and set(r["argmax_agreement"]) == {
        f"{role}/{path}" for role in ("student", "teacher") for path in ("fused", "jit", "onnxruntime")
    }
