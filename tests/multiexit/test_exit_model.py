"""multiexit.model: reference answers from plain timm, exit bookkeeping in the forward, bad knobs refused."""

import pytest
import torch
from torch import nn

from vitstudy import multiexit
from vitstudy.models import SMALL_MODELS, create_model
from vitstudy.multiexit import MultiExitViT


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


def test_per_sample_exit_equals_running_each_image_alone(tiny_vit, images, mixed_threshold):
    """Exiting per image inside a batch gives each image what it gets when run alone."""
    model = MultiExitViT(tiny_vit, policy="sample").eval()
    model.threshold = mixed_threshold(model, images)
    with torch.inference_mode():
        batch = model(images)
        alone = [model(images[i : i + 1]) for i in range(len(images))]
    assert 0 < (batch.exit_block == 3).sum() < len(images)
    assert torch.equal(batch.exit_block, torch.cat([a.exit_block for a in alone]))
    torch.testing.assert_close(batch.logits, torch.cat([a.logits for a in alone]), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(batch.confidence, torch.cat([a.confidence for a in alone]), equal_nan=True)


def test_outputs_come_back_in_input_order(tiny_vit, images, mixed_threshold):
    """Permuting the batch permutes logits, exit blocks and confidences the same way."""
    model = MultiExitViT(tiny_vit, policy="sample").eval()
    model.threshold = mixed_threshold(model, images)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        out, shuffled = model(images), model(images[order])
    assert torch.equal(shuffled.exit_block, out.exit_block[order])
    torch.testing.assert_close(shuffled.logits, out.logits[order], rtol=1e-4, atol=1e-5)


def test_confidence_is_nan_after_an_image_left(tiny_vit, images, mixed_threshold):
    """An image that left at block 3 has a confidence at exit 3 and nan at exits 6 and 9."""
    model = MultiExitViT(tiny_vit, policy="sample").eval()
    model.threshold = mixed_threshold(model, images)
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


@pytest.mark.parametrize("kind", ["entropy", "margin"])
def test_other_confidences_drive_the_exit(tiny_vit, images, kind):
    """Entropy and margin confidences are what the model thresholds when chosen."""
    model = MultiExitViT(tiny_vit, confidence=kind, threshold=0.0).eval()
    with torch.inference_mode():
        out = model(images)
        tokens = tiny_vit.blocks[:3](tiny_vit._pos_embed(tiny_vit.patch_embed(images)))
        expected = multiexit.confidence(tiny_vit.head(tiny_vit.norm(tokens)[:, 0]), kind)
    torch.testing.assert_close(out.confidence[:, 0], expected)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(exits=(0, 6)), ValueError, r"exits=\(0, 6\) .* 1\.\.\.11"),
        (dict(exits=(3, 12)), ValueError, r"exits=\(3, 12\) .* 1\.\.\.11"),
        (dict(exits=()), ValueError, r"exits=\(\) .* at least one"),
        (dict(exits=(3, 3)), ValueError, r"exits=\(3, 3\) .* each block at most once"),
        (dict(threshold=1.5), ValueError, r"threshold=1\.5 .* \[0, 1\]"),
        (dict(threshold=-0.1), ValueError, r"threshold=-0\.1 .* \[0, 1\]"),
        (
            dict(variant="shared"),
            ValueError,
            r"variant='shared' .* \('same', 'finetune', 'scratch', 'separate', 'joint'\)",
        ),
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


def test_bad_forced_exit_in_the_call_is_refused(tiny_vit, images):
    """A forced exit passed to the forward is checked against the model's exits."""
    with pytest.raises(ValueError, match=r"forced_exit=5 .* \(3, 6, 9\)"):
        MultiExitViT(tiny_vit)(images, forced_exit=5)


def test_a_model_that_is_not_a_timm_vit_is_refused():
    """Wrapping anything but a timm VisionTransformer names its class."""
    with pytest.raises(TypeError, match=r"model of class Sequential is not a timm VisionTransformer"):
        MultiExitViT(nn.Sequential(nn.Linear(4, 4)))


@pytest.mark.parametrize("policy", multiexit.POLICIES)
def test_keeping_every_row_gives_the_plain_logits_even_when_images_are_confident(tiny_vit, images, policy):
    """keep_every_row runs the decisions and compactions but no image leaves: the output is plain timm's."""
    model = MultiExitViT(tiny_vit, threshold=0.0, policy=policy, keep_every_row=True).eval()
    with torch.inference_mode():
        out, reference = model(images), tiny_vit(images)
    torch.testing.assert_close(out.logits, reference)
    assert (out.exit_block == 12).all() and not out.confidence.isnan().any()


def test_keeping_every_row_compacts_at_every_exit(tiny_vit, images, monkeypatch):
    """The control pays the per-sample compaction: one index_select of every row at each exit."""
    from vitstudy.multiexit import model as model_module

    kept = []
    monkeypatch.setattr(model_module, "compact", lambda x, rows: kept.append(len(rows)) or x.index_select(0, rows))
    with torch.inference_mode():
        MultiExitViT(tiny_vit, keep_every_row=True).eval()(images)
    assert kept == [len(images)] * 3


def test_scratch_head_does_not_depend_on_the_global_generator(tiny_vit):
    """The `scratch` variant's head starts from the same weights whatever the process drew before, and building it
    leaves the global generator where it was."""
    torch.manual_seed(1)
    first = MultiExitViT(tiny_vit, variant="scratch").final_head
    torch.manual_seed(2)
    state = torch.get_rng_state()
    second = MultiExitViT(tiny_vit, variant="scratch").final_head
    assert torch.equal(first.weight, second.weight) and torch.equal(first.bias, second.bias)
    assert torch.equal(torch.get_rng_state(), state)
    assert not torch.equal(first.weight, tiny_vit.head.weight)


def test_exit_features_are_timms_pre_logits_on_the_cls_row(tiny_vit):
    """The exit's short path (the norm on the [CLS] row) gives exactly timm's forward_head(norm(x), pre_logits=True);
    in training with head dropout it takes timm's path, so the dropout still runs."""
    tokens = torch.randn(5, 50, tiny_vit.embed_dim, generator=torch.Generator().manual_seed(6))
    model = MultiExitViT(tiny_vit).eval()
    with torch.inference_mode():
        assert torch.equal(model.exit_features(tokens), tiny_vit.forward_head(tiny_vit.norm(tokens), pre_logits=True))
    dropping = MultiExitViT(create_model("vitstudy_tiny_patch4_28", drop_rate=0.5)).train()
    with torch.no_grad():
        features = dropping.exit_features(tokens)
    assert (features == 0).float().mean() > 0.3  # half the features dropped (and the rest scaled)
