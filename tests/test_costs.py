"""Benchmarking: parameter and FLOP counts against hand formulas, latency, faster inference paths."""

import pytest
import torch
from torch import nn

from helpers.core.errors import UserError
from helpers.perf import (
    FLOP_CONVENTION,
    argmax_agreement,
    count_parameters,
    format_params,
    gflops,
    latency,
    optimize_for_inference,
)
from helpers.perf.inference import fold_conv_bn


def tiny_segnet(seed=0) -> nn.Sequential:
    """Conv-BN-ReLU x3 and a 1x1 classifier to 21 classes; BNs with non-trivial running stats."""
    torch.manual_seed(seed)
    layers, c = [], 3
    for out in (8, 16, 16):
        layers += [nn.Conv2d(c, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
        c = out
    layers.append(nn.Conv2d(c, 21, 1))
    net = nn.Sequential(*layers)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.3, 3)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return net.eval()


class DictOut(nn.Module):
    """torchvision segmentation style: returns {"out": logits}."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return {"out": self.net(x)}


IMAGES = torch.randn(2, 3, 40, 48, generator=torch.Generator().manual_seed(1))


def test_count_parameters_and_format():
    conv = nn.Conv2d(3, 8, 3)
    assert count_parameters(conv) == 8 * 3 * 9 + 8
    shared = nn.Linear(4, 4)
    assert count_parameters(nn.Sequential(shared, shared)) == 20  # a shared layer counts once
    assert format_params(3_221_000) == "3.22M"
    assert format_params(81_200) == "81.2K"
    assert format_params(950) == "950"
    assert format_params(58_600_000) == "58.60M"


def test_gflops_of_a_conv_matches_the_hand_formula():
    conv = nn.Conv2d(3, 16, 3, padding=1, bias=False)
    # multiply-add = 2 FLOPs: 2 * C_out * H * W * C_in * k * k
    assert gflops(conv, (1, 3, 32, 32)) == pytest.approx(2 * 16 * 32 * 32 * 3 * 9 / 1e9)
    dw = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8, bias=False)  # output 16 x 16
    assert gflops(dw, (2, 8, 32, 32)) == pytest.approx(2 * 2 * 8 * 16 * 16 * 1 * 9 / 1e9)


def test_one_flop_convention_a_multiply_add_is_two_flops():
    conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)  # 9 multiply-adds per output pixel, 8 x 8 outputs
    assert gflops(conv, (1, 1, 8, 8)) * 1e9 == 2 * 9 * 64
    assert "multiply-add counted as 2" in FLOP_CONVENTION and "torch.utils.flop_counter" in FLOP_CONVENTION


def test_gflops_restores_training_mode():
    net = tiny_segnet().train()
    gflops(net, (1, 3, 16, 16))
    assert net.training


def test_latency_measures_every_model_and_leaves_them_unchanged():
    a, b = tiny_segnet(0), tiny_segnet(1).train()
    res = latency({"a": a, "b": b}, input_size=(1, 3, 32, 32), warmup=1, rounds=2, min_run_time=0.02)
    assert set(res) == {"a", "b"}
    for r in res.values():
        assert r["mean_ms"] > 0 and r["std_ms"] >= 0 and r["runs"] >= 2
        assert r["device"] == "cpu" and r["dtype"] == "float32" and r["input_size"] == [1, 3, 32, 32]
        assert r["threads"] >= 1
    assert b.training and not a.training


def test_latency_accepts_frozen_jit_models():
    jit = optimize_for_inference(tiny_segnet(), "jit", input_size=(1, 3, 32, 32))
    res = latency({"jit": jit}, input_size=(1, 3, 32, 32), warmup=1, rounds=1, min_run_time=0.01, threads=1)
    assert res["jit"]["mean_ms"] > 0 and res["jit"]["threads"] == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without a GPU")
def test_cuda_without_gpu_is_a_user_error():
    with pytest.raises(UserError, match="CUDA"):
        latency({"a": tiny_segnet()}, input_size=(1, 3, 8, 8), device="cuda")


def test_fold_conv_bn_folds_every_pair_and_keeps_the_output():
    net = tiny_segnet()
    ref = net(IMAGES)
    assert fold_conv_bn(net) == 3
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    torch.testing.assert_close(net(IMAGES), ref, atol=1e-4, rtol=1e-4)
    with pytest.raises(UserError, match="eval"):
        fold_conv_bn(tiny_segnet().train())


@pytest.mark.parametrize("path", ["eager", "fused", "jit"])
def test_float_paths_agree_with_eager_and_leave_the_input_alone(path):
    net = tiny_segnet()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    fast = optimize_for_inference(net, path, input_size=(1, 3, 32, 32))  # traced at another size
    assert fast is not net
    with torch.no_grad():
        torch.testing.assert_close(fast(IMAGES), net(IMAGES), atol=1e-4, rtol=1e-4)
    assert argmax_agreement(net, fast, IMAGES) >= 0.999
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == 3
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("path", ["fused", "jit"])
def test_paths_keep_torchvision_style_dict_output(path):
    net = DictOut(tiny_segnet())
    fast = optimize_for_inference(net, path, input_size=(1, 3, 32, 32))
    with torch.no_grad():
        torch.testing.assert_close(fast(IMAGES)["out"], net(IMAGES)["out"], atol=1e-4, rtol=1e-4)


def test_int8_path_stays_close_to_eager():
    net = tiny_segnet()
    calib = [torch.randn(2, 3, 40, 48, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    q = optimize_for_inference(net, "int8", input_size=(1, 3, 40, 48), calibration=calib)
    assert argmax_agreement(net, q, IMAGES) >= 0.9


def test_argmax_agreement_counts_pixels():
    net = tiny_segnet()

    class Negated(nn.Module):
        def forward(self, x):
            return -net(x)

    assert argmax_agreement(net, net, IMAGES) == 1.0
    assert argmax_agreement(net, Negated(), IMAGES) < 0.1  # argmax becomes the argmin
    assert argmax_agreement(net, net, [IMAGES[:1], IMAGES[1:]]) == 1.0


def test_unknown_path_is_a_user_error():
    with pytest.raises(UserError, match="fused"):
        optimize_for_inference(tiny_segnet(), "tensorrt")
