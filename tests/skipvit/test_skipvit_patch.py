"""SkipViT on timm ViTs: equality with stock timm, token bookkeeping, gradients, FLOPs, bad input, warm-up."""

from __future__ import annotations

import dataclasses

import pytest
import timm
import torch
from timm.layers import Attention
from torch import nn

from vitstudy import skipvit as sv
from vitstudy import train
from vitstudy.models import SMALL_MODELS


class CountingBlock(nn.Module):
    """Keeps channel 0 (the token id), adds 1 to channel 1 (blocks passed); its qkv call feeds the score hook."""

    def __init__(self, dim: int = 8, heads: int = 2) -> None:
        super().__init__()
        self.attn = Attention(dim, heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.attn.qkv(x)
        step = torch.zeros(x.shape[-1])
        step[1] = 1
        return x + step


def counting_run(settings: sv.SkipViTSettings, batch: int = 4, tokens: int = 17, prefix: int = 1):
    torch.manual_seed(0)
    blocks = nn.ModuleList(CountingBlock() for _ in range(12))
    x = torch.randn(batch, tokens, 8)
    x[..., 0] = torch.arange(tokens, dtype=torch.float32)
    x[..., 1] = 0
    trace: list[sv.Stage] = []
    return sv.skipvit_blocks(blocks, x, settings, prefix, trace), trace


# ----------------------------------------------------------------------------------------------------------
# Equality with stock timm


def test_zero_ratio_equals_timm_exactly(tiny_vit, images):
    """r = 0 at two stages with a skip gives exactly the plain timm model's output."""
    model, x = tiny_vit(), images()
    expected = model(x)
    sv.apply_skipvit(model, sv.SkipViTSettings((4, 7), (0.0, 0.0), skip_layer=10))
    assert torch.equal(model(x), expected)


def test_dropping_off_equals_timm_exactly(tiny_vit, images):
    """With dropping switched off, a Table 1 preset gives exactly the stock timm output."""
    model, x = tiny_vit(), images()
    expected = model(x)
    sv.apply_skipvit(model, "skip_6_55_s11")
    assert not torch.allclose(model(x), expected)
    with sv.dropping(model, False):
        assert torch.equal(model(x), expected)


def test_remove_restores_stock_class(tiny_vit, images):
    """remove_skipvit gives back the stock class, the same state dict and the same output."""
    model, x = tiny_vit(), images()
    expected, keys = model(x), list(model.state_dict())
    sv.remove_skipvit(sv.apply_skipvit(model, "skip_6_55_s11"))
    assert type(model) is timm.models.VisionTransformer
    assert list(model.state_dict()) == keys and torch.equal(model(x), expected)


def test_trace_forward_gives_the_models_logits(tiny_vit, images):
    """trace_forward's logits equal the patched model's own forward, dropping on and off."""
    model, x = sv.apply_skipvit(tiny_vit(), "skip_6_55_s11"), images()
    logits, trace = sv.trace_forward(model, x)
    torch.testing.assert_close(logits, model(x))
    assert [s.layer for s in trace] == [6]
    with sv.dropping(model, False):
        logits, trace = sv.trace_forward(model, x)
        assert torch.equal(logits, model(x)) and trace == []


# ----------------------------------------------------------------------------------------------------------
# Token bookkeeping


def test_every_token_returns_to_its_original_index():
    """After the skip layer, token ids read 0 … N-1 in order for every image."""
    out, _ = counting_run(sv.SkipViTSettings((4, 7), (0.3, 0.3), skip_layer=10))
    assert torch.equal(out[..., 0], torch.arange(17.0).expand(4, 17))


def test_dropped_tokens_skip_exactly_blocks_after_drop_until_skip_layer():
    """Tokens dropped after block L skip blocks L+1 … S-1: with 4,7 → 10 they pass 7 and 10 of 12 blocks."""
    out, trace = counting_run(sv.SkipViTSettings((4, 7), (0.3, 0.3), skip_layer=10))
    passed = out[..., 1]
    for b in range(4):
        assert torch.equal(passed[b, 1 + trace[0].dropped[b]], torch.full((trace[0].dropped.shape[1],), 7.0))
        assert torch.equal(passed[b, 1 + trace[1].dropped[b]], torch.full((trace[1].dropped.shape[1],), 10.0))
        assert torch.equal(passed[b, 1 + trace[1].kept[b]], torch.full((trace[1].kept.shape[1],), 12.0))
    assert passed[:, 0].eq(12).all()  # [CLS] never skips


def test_prefix_tokens_are_always_kept_in_order():
    """With 3 prefix tokens and plain dropping, the output starts with ids 0, 1, 2 for every image."""
    out, _ = counting_run(sv.SkipViTSettings((2,), (0.9,), mode="drop"), prefix=3)
    assert torch.equal(out[:, :3, 0], torch.tensor([0.0, 1.0, 2.0]).expand(4, 3))


def test_kept_patches_keep_their_relative_order():
    """Plain dropping keeps the surviving patches in ascending original order."""
    out, _ = counting_run(sv.SkipViTSettings((3,), (0.5,), mode="drop"))
    ids = out[:, 1:, 0]
    assert (ids[:, 1:] > ids[:, :-1]).all()


def test_two_stage_ratio_of_surviving_tokens():
    """ratio_of='surviving': 30% then 30% of 16 patches drop 4 then 3 (floor of 30% of 12)."""
    _, trace = counting_run(sv.SkipViTSettings((4, 7), (0.3, 0.3), skip_layer=10))
    assert [s.dropped.shape[1] for s in trace] == [4, 3]


def test_two_stage_ratio_of_original_tokens():
    """ratio_of='original': each stage drops 30% of the original 16 patches, 4 and 4."""
    _, trace = counting_run(sv.SkipViTSettings((4, 7), (0.3, 0.3), skip_layer=10, ratio_of="original"))
    assert [s.dropped.shape[1] for s in trace] == [4, 4]


def test_second_stage_ranks_only_survivors():
    """The second stage sees only the tokens the first one kept."""
    _, trace = counting_run(sv.SkipViTSettings((4, 7), (0.3, 0.3), skip_layer=10))
    assert torch.equal(trace[1].present, trace[0].kept)


def test_batch_images_keep_different_sets_and_match_single_runs(tiny_vit, images):
    """Images in one batch keep different token sets, and each equals its own single-image run."""
    model, x = tiny_vit(), images(batch=4)
    sv.apply_skipvit(model, "skip_6_55_s11")
    _, trace = sv.trace_forward(model, x)
    kept = trace[0].kept
    assert any(not torch.equal(kept[0], kept[b]) for b in range(1, 4))
    together = model(x)
    alone = torch.cat([model(x[b : b + 1]) for b in range(4)])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)


def test_fused_mode_appends_one_fused_token():
    """Fused mode leaves prefix + kept + one fused token (its value: test_fused_token_is_the_weighted_average)."""
    out, _ = counting_run(sv.SkipViTSettings((6,), (0.5,), mode="fused", placement="block"))
    assert out.shape[1] == 1 + 8 + 1


def test_a_later_stage_keeps_the_updated_fused_token(tiny_vit, images):
    """A second fused stage that drops nothing changes nothing: the first stage's fused token rides along as the
    blocks after it updated it (an earlier version put back its stale value at every later stage)."""
    x = images()
    one = sv.apply_skipvit(tiny_vit(), sv.SkipViTSettings((4,), (0.3,), mode="fused"))(x)
    two = sv.apply_skipvit(tiny_vit(), sv.SkipViTSettings((4, 7), (0.3, 0.0), mode="fused"))(x)
    torch.testing.assert_close(two, one)


def test_attention_half_then_mlp_half_is_timm_block(tiny_vit, images):
    """Splitting a timm Block into its two residual steps gives exactly the Block's output."""
    model, x = tiny_vit(), images()
    tokens = model.patch_embed(x)
    tokens = model._pos_embed(tokens)
    block = model.blocks[0]
    assert torch.equal(sv.mlp_half(block, sv.attention_half(block, tokens)), block(tokens))


@pytest.mark.parametrize("placement", sv.PLACEMENTS)
def test_both_placements_drop_the_same_share(tiny_vit, images, placement):
    """Dropping after the attention or after the whole block keeps the same number of tokens; they differ in
    output (the dropped tokens skip block L's MLP only when dropped after the attention)."""
    settings = sv.SkipViTSettings((6,), (0.55,), skip_layer=11, placement=placement)
    _, trace = sv.trace_forward(sv.apply_skipvit(tiny_vit(), settings), images())
    assert trace[0].kept.shape[1] == 49 - 26


# ----------------------------------------------------------------------------------------------------------
# Gradients


def _block6_output_grad(model: nn.Module, x: torch.Tensor, preset: str):
    """Gradient magnitude [B, N] reaching block 6's output tokens, and the drop trace, for a 2-image batch."""
    sv.apply_skipvit(model, preset)
    _, trace = sv.trace_forward(model, x)
    saved = {}

    def keep_grad(_module, _inputs, out):
        out.retain_grad()
        saved["out"] = out

    model.blocks[5].register_forward_hook(keep_grad)
    model(x).sum().backward()
    return saved["out"].grad.abs().sum(-1), trace


def test_dropped_tokens_get_gradients_through_the_skip(tiny_vit, images):
    """With the skip, the dropped tokens' outputs of block L receive gradient (their earlier layers train)."""
    grad, trace = _block6_output_grad(tiny_vit(), images(batch=2), "skip_6_55_s11")
    for b in range(2):
        assert (grad[b, 1 + trace[0].dropped[b]] > 0).all()


def test_plain_dropping_cuts_dropped_tokens_gradient(tiny_vit, images):
    """Without a skip, the dropped tokens' outputs of block L get no gradient (the contrast to the skip)."""
    grad, trace = _block6_output_grad(tiny_vit(), images(batch=2), "drop_6_55")
    assert grad[0, 1 + trace[0].dropped[0]].eq(0).all()


# ----------------------------------------------------------------------------------------------------------
# timm models and FLOPs


@pytest.mark.parametrize(
    "name, kwargs, input_size",
    [
        ("vit_small_patch16_224", dict(img_size=64), (3, 64, 64)),
        ("deit_tiny_patch16_224", dict(img_size=64), (3, 64, 64)),
        *((name, {}, (1, 28, 28)) for name in SMALL_MODELS),
    ],
)
def test_works_on_timm_models(name, kwargs, input_size):
    """Table 1's headline preset runs on timm ViTs (random weights) and needs fewer FLOPs."""
    torch.manual_seed(0)
    model = timm.create_model(name, **kwargs).eval()
    x = torch.randn(2, *input_size)
    expected = model(x)
    sv.apply_skipvit(model, "skip_6_55_s11")
    out = model(x)
    assert out.shape == expected.shape and torch.isfinite(out).all()
    with sv.dropping(model, False):
        assert torch.equal(model(x), expected)
    assert sv.flop_gain(model, input_size)["ideal_gain_pct"] > 5


# ----------------------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    "settings, message",
    [
        (sv.SkipViTSettings((3,), (0.5,), mode="drop"), r"drop layer 3 .* 2 blocks, expected 1 … 2"),
        (sv.SkipViTSettings((1,), (0.5,), skip_layer=3), r"skip_layer=3 is out of range: .* expected 2 … 2"),
    ],
)
def test_layers_out_of_range_raise_clear_errors(tiny_vit, settings, message):
    """Layers beyond the model's depth are refused when the settings meet the model."""
    with pytest.raises(ValueError, match=message):
        sv.apply_skipvit(tiny_vit(depth=2), settings)


def test_model_without_class_token_is_refused():
    """A ViT without [CLS] has no CLS attention to rank by: the error says so."""
    model = timm.create_model("vitstudy_tiny_patch4_28", depth=2, class_token=False, global_pool="avg")
    with pytest.raises(ValueError, match="no \\[CLS\\] token"):
        sv.apply_skipvit(model)


def test_configure_needs_the_patch(tiny_vit):
    """configure on an unpatched model says to call apply_skipvit first."""
    with pytest.raises(TypeError, match="apply_skipvit"):
        sv.configure(tiny_vit(depth=2), "baseline")


# ----------------------------------------------------------------------------------------------------------
# Warm-up


def test_warmup_hook_switches_dropping_on_at_epoch_w(tiny_vit):
    """warmup_hook(2) keeps dropping off in epochs 0 and 1 and switches it on from epoch 2."""
    model = sv.apply_skipvit(tiny_vit(depth=2), sv.SkipViTSettings((1,), (0.5,), skip_layer=2))
    hook, states = sv.warmup_hook(2), []
    for epoch in range(4):
        hook(model, epoch)
        states.append(model.skipvit.enabled)
    assert states == [False, False, True, True]


def test_warmup_epochs_are_fifteen_percent_rounded():
    """15% of 100 epochs is 15 (the paper), of 7 is 1, of 2 is 0."""
    assert [sv.warmup_epochs_for(e) for e in (100, 7, 2)] == [15, 1, 0]


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: sv.warmup_epochs_for(10, 1.0), r"warm-up fraction=1\.0 is not allowed: expected \[0, 1\)"),
        (lambda: sv.warmup_hook(-1), r"warmup_epochs=-1 is not allowed: expected an integer >= 0"),
    ],
)
def test_bad_warmup_raises_clear_errors(call, message):
    """A warm-up fraction outside [0, 1) or a negative warm-up is refused with the value named."""
    with pytest.raises(ValueError, match=message):
        call()


def test_training_with_warmup_hook_trains_with_dropping_from_epoch_w(digits_cfg, tmp_path):
    """train(..., on_epoch_start=warmup_hook(1)) trains epoch 0 without and epoch 1 with dropping."""
    seen = []
    settings = sv.SkipViTSettings((1,), (0.5,), skip_layer=2)

    def factory(cfg, splits):
        return sv.apply_skipvit(train.default_model_factory(cfg, splits), settings)

    def hook(model, epoch):
        sv.warmup_hook(1)(model, epoch)
        seen.append(model.skipvit.enabled)

    cfg = dataclasses.replace(digits_cfg, num_workers=0)
    result = train.train(cfg, tmp_path / "run", progress=False, model_factory=factory, on_epoch_start=hook)
    assert seen == [False, True] and result.model.skipvit == dataclasses.replace(settings, enabled=True)
