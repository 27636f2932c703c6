"""On a CUDA device (marker ``cuda``, skipped without one; run by ``make gpu``): both methods against their
references in bf16 and fp32, an AMP epoch killed and resumed, and the timing engine's synchronisation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from vitstudy import bench
from vitstudy import skipvit as sv
from vitstudy.checkpoint import read_checkpoint_index
from vitstudy.models import create_model
from vitstudy.multiexit import MultiExitViT

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]
BF16 = dict(device_type="cuda", dtype=torch.bfloat16)


def tiny(depth: int = 12):
    torch.manual_seed(0)
    return create_model("vitstudy_tiny_patch4_28", depth=depth).cuda().eval()


def images(count: int = 16) -> torch.Tensor:
    return torch.randn(count, 1, 28, 28, generator=torch.Generator().manual_seed(1)).cuda()


def test_never_firing_exit_equals_timm_in_bf16():
    """A threshold no image reaches gives exactly timm's logits under bf16 autocast, on the GPU."""
    vit, x = tiny(), images()
    with torch.inference_mode(), torch.autocast(**BF16):
        assert torch.equal(MultiExitViT(vit, threshold=1.0).eval()(x).logits, vit(x))


def test_per_sample_equals_one_by_one_in_bf16():
    """Each image gets in the batch what it gets alone, in bf16 (bf16's rounding between batch sizes allowed)."""
    model, x = MultiExitViT(tiny(), policy="sample").eval(), images()
    with torch.inference_mode(), torch.autocast(**BF16):
        model.threshold = model(x).confidence[:, 0].median().item()
        batch = model(x)
        alone = [model(x[i : i + 1]) for i in range(len(x))]
    one_by_one = torch.cat([a.exit_block for a in alone])
    near = (batch.confidence[:, 0] - model.threshold).abs() < 2e-2  # bf16 may flip an image on the threshold
    assert torch.equal(batch.exit_block[~near], one_by_one[~near]) and (batch.exit_block == 3).any()
    same = batch.exit_block == one_by_one
    torch.testing.assert_close(
        batch.logits[same].float(), torch.cat([a.logits for a in alone])[same].float(), rtol=5e-2, atol=5e-2
    )


def test_skipvit_zero_ratio_equals_timm_on_cuda():
    """r = 0 with a skip gives exactly timm's output on the GPU."""
    vit, x = tiny(), images()
    with torch.inference_mode():
        expected = vit(x)
        sv.apply_skipvit(vit, sv.SkipViTSettings((4, 7), (0.0, 0.0), skip_layer=10))
        assert torch.equal(vit(x), expected)


def test_gradients_flow_through_the_skip_on_cuda():
    """Training through a drop and its skip: every block gets a finite gradient, equal to the CPU's (fp32)."""
    grads = {}
    for device in ("cuda", "cpu"):
        model = sv.apply_skipvit(tiny().to(device).train(), "skip_6_55_s11")
        model(images().to(device)).square().mean().backward()
        grads[device] = {n: p.grad.float().cpu() for n, p in model.named_parameters() if p.grad is not None}
    assert grads["cuda"].keys() == grads["cpu"].keys() and "blocks.6.attn.qkv.weight" in grads["cuda"]
    for name, grad in grads["cuda"].items():
        assert torch.isfinite(grad).all(), name
        torch.testing.assert_close(grad, grads["cpu"][name], rtol=2e-2, atol=1e-4, msg=name)


SETTINGS = [
    "dataset=digits",
    "train_size=512",
    "val_size=128",
    "epochs=3",
    "batch_size=16",
    "augment=false",
    'model_kwargs={"patch_size": 2}',
    "warmup_epochs=0.5",
    "amp=true",
]


def _train(run_dir, **kwargs):
    command = [sys.executable, "-m", "vitstudy", "train", "--quiet", "--run-dir", str(run_dir), "--set", *SETTINGS]
    return subprocess.Popen(command, env=dict(os.environ, PYTHONUNBUFFERED="1"), **kwargs)


def test_amp_epoch_then_sigkill_resume(tmp_path):
    """An AMP run on the GPU killed in epoch 2 resumes from epoch 1's checkpoint and ends as an uninterrupted one."""
    pytest.importorskip("sklearn")  # digits: the one data set a bare GPU machine has
    assert _train(tmp_path / "whole", stdout=subprocess.DEVNULL).wait() == 0
    killed = tmp_path / "killed"
    process = _train(killed, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while (read_checkpoint_index(killed) or {}).get("epoch") != 0:
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "epoch 1's checkpoint never appeared"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert read_checkpoint_index(killed)["epoch"] == 0, "epoch 2 ended before the kill"
    assert _train(killed, stdout=subprocess.DEVNULL).wait() == 0
    columns = ["epoch", "train_loss", "val_loss", "val_top1"]
    resumed, whole = pd.read_csv(killed / "metrics.csv"), pd.read_csv(tmp_path / "whole" / "metrics.csv")
    pd.testing.assert_frame_equal(resumed[columns], whole[columns], rtol=2e-2)  # GPU kernels need not be bitwise
    assert json.loads((killed / "final.json").read_text())["epochs"] == 3


def test_timing_engine_synchronises_cuda():
    """Four large matmuls time about four times one: without a sync both would time the launch alone."""
    a = torch.randn(4096, 4096, device="cuda")
    arms = {"one": lambda: a @ a, "four": lambda: [a @ a for _ in range(4)]}
    comparison = bench.compare(arms, "four", None, bench.CompareSettings(rounds=3, min_run_time=0.1), "cuda")
    assert 2.5 < comparison.speedup("one")["speedup"] < 5.5
