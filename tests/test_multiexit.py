"""Multi-exit ViT: reference answers from plain timm, exit bookkeeping, bad input, head training, the explorer."""

import dataclasses

import pandas as pd
import pytest
import torch
from torch import nn

from vitstudy import bench, exitstudy, multiexit
from vitstudy.config import Scale
from vitstudy.models import SMALL_MODELS, create_model
from vitstudy.multiexit import MultiExitViT
from vitstudy.widgets import set_controls


@pytest.fixture(scope="module")
def tiny_vit():
    torch.manual_seed(0)
    return create_model("vitstudy_tiny_patch4_28").eval()


@pytest.fixture(scope="module")
def images():
    return torch.randn(12, 1, 28, 28, generator=torch.Generator().manual_seed(1))


def _mixed_threshold(model: MultiExitViT, x: torch.Tensor) -> float:
    """A threshold between the exit-3 confidences, so some images leave at 3 and the rest go on."""
    with torch.inference_mode():
        conf = model(x).confidence[:, 0]
    return conf.median().item()


@pytest.mark.parametrize("policy", multiexit.POLICIES)
@pytest.mark.parametrize("variant", ["same", "separate"])
def test_threshold_that_never_fires_equals_timm(tiny_vit, images, policy, variant):
    """With no image confident enough, the logits are exactly the plain timm model's."""
    model = MultiExitViT(tiny_vit, variant=variant, threshold=1.0, policy=policy).eval()
    with torch.inference_mode():
        out, reference = model(images), tiny_vit(images)
    assert torch.equal(out.logits, reference)
    assert (out.exit_block == 12).all()
    assert not out.confidence.isnan().any()


def test_per_sample_exit_equals_running_each_image_alone(tiny_vit, images):
    """Exiting per image inside a batch gives each image what it gets when run alone."""
    model = MultiExitViT(tiny_vit, policy="sample").eval()
    model.threshold = _mixed_threshold(model, images)
    with torch.inference_mode():
        batch = model(images)
        alone = [model(images[i : i + 1]) for i in range(len(images))]
    assert 0 < (batch.exit_block == 3).sum() < len(images)
    assert torch.equal(batch.exit_block, torch.cat([a.exit_block for a in alone]))
    torch.testing.assert_close(batch.logits, torch.cat([a.logits for a in alone]), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(batch.confidence, torch.cat([a.confidence for a in alone]), equal_nan=True)


def test_outputs_come_back_in_input_order(tiny_vit, images):
    """Permuting the batch permutes logits, exit blocks and confidences the same way."""
    model = MultiExitViT(tiny_vit, policy="sample").eval()
    model.threshold = _mixed_threshold(model, images)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        out, shuffled = model(images), model(images[order])
    assert torch.equal(shuffled.exit_block, out.exit_block[order])
    torch.testing.assert_close(shuffled.logits, out.logits[order], rtol=1e-4, atol=1e-5)


def test_confidence_is_nan_after_an_image_left(tiny_vit, images):
    """An image that left at block 3 has a confidence at exit 3 and nan at exits 6 and 9."""
    model = MultiExitViT(tiny_vit, policy="sample").eval()
    model.threshold = _mixed_threshold(model, images)
    with torch.inference_mode():
        out = model(images)
    left = out.exit_block == 3
    assert out.confidence[left, 1:].isnan().all() and not out.confidence[:, 0].isnan().any()


def test_batch_policy_moves_the_whole_batch_together(tiny_vit, images):
    """Under the report's rule every image of a batch leaves at the same block."""
    model = MultiExitViT(tiny_vit, policy="batch").eval()
    with torch.inference_mode():
        conf = model(images).confidence[:, 0]
        model.threshold = conf.min().item()  # the least confident image just reaches it: the batch leaves at 3
        assert (model(images).exit_block == 3).all()
        model.threshold = conf.max().item()  # most images are not confident: nobody leaves at 3
        assert not (model(images).exit_block == 3).any()


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("vit_base_patch16_224", dict(img_size=32)),
        ("vit_small_patch16_224", dict(img_size=32)),
        ("deit_tiny_patch16_224", dict(img_size=32)),
        *[(name, {}) for name in SMALL_MODELS],
    ],
)
def test_exits_after_blocks_3_6_9_work_on_timm_vits(name, kwargs):
    """Forced exits at 3, 6, 9 and a threshold of 0 give [B, classes] logits leaving where expected."""
    torch.manual_seed(0)
    vit = create_model(name, **kwargs).eval()
    x = torch.randn(2, *vit.patch_embed.proj.weight.shape[1:2], *vit.patch_embed.img_size)
    model = MultiExitViT(vit, exits=(3, 6, 9), threshold=0.0).eval()
    with torch.inference_mode():
        for block in (3, 6, 9):
            out = model(x, forced_exit=block)
            assert out.logits.shape == (2, vit.num_classes) and (out.exit_block == block).all()
        assert (model(x).exit_block == 3).all()


def test_forced_exit_computes_only_k_blocks(tiny_vit, images):
    """Forcing every image out after block k runs exactly k blocks."""
    calls = []
    hooks = [b.register_forward_hook(lambda *_, i=i: calls.append(i)) for i, b in enumerate(tiny_vit.blocks)]
    try:
        model = MultiExitViT(tiny_vit, forced_exit=6).eval()
        with torch.inference_mode():
            model(images)
    finally:
        for hook in hooks:
            hook.remove()
    assert calls == list(range(6))


def test_forced_exit_logits_are_the_exit_head_on_block_k(tiny_vit, images):
    """A forced exit at k returns the final norm and head applied to block k's [CLS] token."""
    model = MultiExitViT(tiny_vit, forced_exit=3).eval()
    with torch.inference_mode():
        tokens = tiny_vit.blocks[:3](tiny_vit._pos_embed(tiny_vit.patch_embed(images)))
        reference = tiny_vit.head(tiny_vit.norm(tokens)[:, 0])
        out = model(images)
    torch.testing.assert_close(out.logits, reference)


def test_confidence_functions_on_uniform_and_certain_logits():
    """Uniform logits: softmax 1/C, entropy and margin 0; a dominant class: all near 1."""
    uniform, certain = torch.zeros(1, 10), torch.tensor([[30.0] + [0.0] * 9])
    torch.testing.assert_close(multiexit.max_softmax(uniform), torch.tensor([0.1]))
    torch.testing.assert_close(multiexit.entropy_confidence(uniform), torch.tensor([0.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(multiexit.margin_confidence(uniform), torch.tensor([0.0]))
    for kind in multiexit.CONFIDENCES:
        assert multiexit.confidence(certain, kind).item() > 0.999


@pytest.mark.parametrize("kind", ["entropy", "margin"])
def test_other_confidences_drive_the_exit(tiny_vit, images, kind):
    """Entropy and margin confidences are what the model thresholds when chosen."""
    model = MultiExitViT(tiny_vit, confidence=kind, threshold=0.0).eval()
    with torch.inference_mode():
        out = model(images)
        tokens = tiny_vit.blocks[:3](tiny_vit._pos_embed(tiny_vit.patch_embed(images)))
        expected = multiexit.confidence(tiny_vit.head(tiny_vit.norm(tokens)[:, 0]), kind)
    torch.testing.assert_close(out.confidence[:, 0], expected)


def test_exit_decision_batch_rule_uses_the_least_confident_image():
    """The batch rule fires only when min(confidence) reaches the threshold; the sample rule per image."""
    conf = torch.tensor([0.9, 0.5, 0.95])
    assert multiexit.exit_decision(conf, 0.5, "batch").all()
    assert not multiexit.exit_decision(conf, 0.6, "batch").any()
    assert multiexit.exit_decision(conf, 0.6, "sample").tolist() == [True, False, True]


def test_split_exiting_keeps_input_order():
    """Staying and leaving rows each come back in their input order."""
    leave = torch.tensor([True, False, True, False, False, True])
    stay, gone = multiexit.split_exiting(leave, int(leave.sum()))
    assert stay.tolist() == [1, 3, 4] and gone.tolist() == [0, 2, 5]


def test_compact_and_scatter_rows_round_trip():
    """Compacted rows scattered back to their origins rebuild the original rows."""
    x = torch.arange(24.0).reshape(6, 2, 2)
    rows = torch.tensor([4, 1])
    out = torch.zeros_like(x)
    multiexit.scatter_rows(out, rows, multiexit.compact(x, rows))
    assert torch.equal(out[rows], x[rows]) and out[[0, 2, 3, 5]].eq(0).all()


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(exits=(0, 6)), ValueError, r"exit after block 0 .* 1\.\.\.11"),
        (dict(exits=(3, 12)), ValueError, r"exit after block 12 .* 1\.\.\.11"),
        (dict(exits=()), ValueError, r"exits=\(\) .* at least one"),
        (dict(exits=(3, 3)), ValueError, r"each block may appear once"),
        (dict(threshold=1.5), ValueError, r"threshold=1\.5 .* \[0, 1\]"),
        (dict(threshold=-0.1), ValueError, r"threshold=-0\.1 .* \[0, 1\]"),
        (dict(variant="shared"), ValueError, r"variant='shared' .* \('same', 'finetune', 'scratch', 'separate'\)"),
        (dict(policy="token"), ValueError, r"policy='token' .* \('batch', 'sample'\)"),
        (dict(confidence="logit"), ValueError, r"confidence='logit' .* \('softmax', 'entropy', 'margin'\)"),
        (dict(forced_exit=4), ValueError, r"forced_exit=4 .* \(3, 6, 9\)"),
    ],
)
def test_bad_settings_are_refused_with_the_value_and_what_is_allowed(tiny_vit, kwargs, error, message):
    """Every bad knob names its value and the allowed range at construction."""
    with pytest.raises(error, match=message):
        MultiExitViT(tiny_vit, **kwargs)


def test_bad_knob_set_later_is_refused(tiny_vit):
    """Setting a knob after construction is checked the same way."""
    model = MultiExitViT(tiny_vit)
    with pytest.raises(ValueError, match=r"threshold=2 "):
        model.threshold = 2
    with pytest.raises(ValueError, match=r"policy='all'"):
        model.policy = "all"


def test_a_model_that_is_not_a_timm_vit_is_refused():
    """Wrapping anything but a timm VisionTransformer names its class."""
    with pytest.raises(TypeError, match=r"model of class Sequential is not a timm VisionTransformer"):
        MultiExitViT(nn.Sequential(nn.Linear(4, 4)))


def test_exit_costs_add_up_to_the_plain_model(tiny_vit):
    """The pieces' FLOPs sum to bench.flops_per_image of the plain model."""
    costs = multiexit.exit_costs(MultiExitViT(tiny_vit), (1, 28, 28))
    assert costs.plain() == pytest.approx(bench.flops_per_image(tiny_vit, (1, 28, 28)), rel=1e-9)
    assert costs.plain() / costs.forced(3) == pytest.approx(4.0, rel=0.02)


def test_ideal_speedup_of_an_exit_histogram(tiny_vit):
    """Half the images at block 3, half at the end: the ideal speed-up is plain / mean cost."""
    costs = multiexit.exit_costs(MultiExitViT(tiny_vit), (1, 28, 28))
    per_exit = costs.per_exit((3, 6, 9))
    expected = costs.plain() / ((per_exit[0] + per_exit[3]) / 2).item()
    assert costs.ideal_speedup((3, 6, 9), torch.tensor([3, 12])) == pytest.approx(expected)


@pytest.mark.parametrize("policy, batch_size", [("sample", None), ("batch", 4)])
def test_offline_simulation_matches_the_model(tiny_vit, images, policy, batch_size):
    """Exits and predictions computed offline from recorded features equal the model's forward."""
    model = MultiExitViT(tiny_vit, policy=policy).eval()
    model.threshold = _mixed_threshold(model, images)
    record = multiexit.ExitFeatures(model.record_features(images), torch.zeros(12, dtype=torch.long), (3, 6, 9), 12)
    sim = exitstudy.simulate(model.logits_from_features(record), (3, 6, 9), 12, model.threshold, policy, "softmax",
                             batch_size)  # fmt: skip
    with torch.inference_mode():
        outs = [model(chunk) for chunk in images.split(batch_size or len(images))]
    assert torch.equal(sim.exit_block, torch.cat([o.exit_block for o in outs]))
    assert torch.equal(sim.predictions, torch.cat([o.logits for o in outs]).argmax(-1))


@pytest.fixture(scope="module")
def digits_study(tmp_path_factory):
    """A depth-3 ViT trained on digits, its features recorded, every variant's exit-1 head fitted."""
    from vitstudy.config import TrainConfig
    from vitstudy.train import train

    cfg = TrainConfig(
        model="vitstudy_tiny_patch4_28", model_kwargs=dict(depth=3, patch_size=2), dataset="digits",
        train_size=512, val_size=128, epochs=2, batch_size=64, warmup_epochs=0.5, augment=False,
    )  # fmt: skip
    result = train(cfg, tmp_path_factory.mktemp("digits"), progress=False)
    scale = Scale("test", cfg, eval_batch_size=128)
    return exitstudy.build_study(scale, result.model, result.splits, exit_sets=[(1,), (1, 2)], head_epochs=50,
                                 progress=False)  # fmt: skip


def test_head_training_improves_exit_accuracy_on_digits(digits_cfg, tmp_path):
    """Fitting the exit head on frozen features raises exit-1 top-1 over the untrained copy of the final head."""
    from vitstudy.train import train

    result = train(dataclasses.replace(digits_cfg, epochs=3), tmp_path, progress=False)
    model = MultiExitViT(result.model, exits=(1,), variant="separate", forced_exit=1).eval()
    features = {
        name: exitstudy.recorded_features(model, getattr(result.splits, name), 256, progress=False)
        for name in ("train", "test")
    }

    def exit_top1() -> float:
        logits = model.logits_from_features(features["test"])[:, 0]
        return (logits.argmax(-1) == features["test"].targets).float().mean().item()

    before = exit_top1()
    history = model.fit_heads(features["train"], epochs=100, lr=1e-2)
    assert exit_top1() > before + 0.1
    assert history["loss"].iloc[-1] < history["loss"].iloc[0]


def test_finetune_shares_one_head_between_exit_and_final(digits_study):
    """finetune's exit and final outputs use one fitted head; separate keeps the final head as trained."""
    finetune, separate = digits_study.model("finetune", (1,)), digits_study.model("separate", (1,))
    assert finetune.exit_heads[0] is finetune.final_head and finetune.final_head is not digits_study.vit.head
    assert separate.final_head is digits_study.vit.head and separate.exit_heads[0] is not separate.final_head


def test_study_rows_report_accuracy_and_ideal_speedup(digits_study):
    """An offline row has top-1 in range, a drop vs the plain model and a speed-up >= 1 when images leave."""
    row = digits_study.evaluate("separate", (1, 2), 0.0, "sample")
    assert row["exited_pct"] == 100 and row["at_1_pct"] == 100
    assert row["ideal_speedup"] == pytest.approx(digits_study.costs.plain() / digits_study.costs.per_exit((1, 2))[0])
    assert 0 <= row["top1"] <= 100 and row["top1_drop"] == pytest.approx(row["plain_top1"] - row["top1"])


def test_batch_rule_exit_rate_falls_with_batch_size(digits_study):
    """Under the batch rule, bigger batches exit less often (the report's null result)."""
    threshold = multiexit.max_softmax(digits_study.logits("separate", (1,))[:, 0]).median().item()
    rates = exitstudy.batch_rule_exit_rates(digits_study, "separate", (1,), [threshold], [1, 4, 64])
    shares = rates.sort_values("batch_size")["batch_exited_pct"].tolist()
    assert shares[0] >= shares[1] >= shares[2] and shares[0] > shares[2]


def test_explorer_widget_follows_its_controls(digits_study):
    """Moving the explorer's controls updates exit shares, top-1 and the figure without a browser."""
    widget = exitstudy.explorer_widget(digits_study, show=False, count=8)
    assert widget.result.figure.axes
    every = set_controls(widget, {"exits": "1", "policy": "sample", "threshold": 0.0})
    assert every.summary["exited_pct"] == 100 and every.summary["exits"] == "1"
    batch = set_controls(widget, {"threshold": 1.0, "policy": "batch"})
    assert batch.summary["exited_pct"] < 100 and batch.summary["policy"] == "batch"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the cells of a machine without CUDA")
def test_gpu_cells_say_not_measured_without_cuda(digits_study):
    """Timing on an absent CUDA device gives the not-measured text in every speed cell, never a number."""
    settings = bench.TimingSettings(warmup=0, runs=1)
    table = exitstudy.real_data_table(digits_study, 0.9, 16, settings, ["separate"], [(1,)], ["sample"], "cuda")
    assert (table[["images_per_s", "speedup"]] == bench.NOT_MEASURED_NO_CUDA).all().all()
    assert 0 <= table["top1"].iloc[0] <= 100


def test_report_numbers_sit_beside_matching_rows():
    """The report's Table 5.2 top-1 and speed-up join our rows by variant and exit; ours keep their own values."""
    from vitstudy.reference import load_reference

    ours = pd.DataFrame({"variant": ["finetune", "separate"], "exits": ["3", "3"], "top1": [90.0, 91.0]})
    table = exitstudy.beside_report(ours, load_reference("multiexit_5.2"))
    assert table["report_top1"].iloc[0] == pytest.approx(83.52) and table["report_top1"].isna().iloc[1]
    assert table["top1"].tolist() == [90.0, 91.0]


def test_batch_rule_arithmetic():
    """Max-softmax floor 1/C, and the confident share a batch of b needs to leave half the time: 0.5 ** (1/b)."""
    floor = exitstudy.chance_floor_table((10, 1000), threshold=0.01).set_index("classes")
    assert floor.loc[10, "exit_guaranteed_per_image"] and not floor.loc[1000, "exit_guaranteed_per_image"]
    needed = exitstudy.required_confident_share([256]).iloc[0]
    assert needed["confident_share_needed_pct"] == pytest.approx(100 * 0.5 ** (1 / 256))
