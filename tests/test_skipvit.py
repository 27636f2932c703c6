"""SkipViT: token dropping with a token-level skip connection, on tiny timm ViTs."""

from __future__ import annotations

import dataclasses

import pytest
import timm
import torch
from timm.layers import Attention
from torch import nn

from vitstudy import skipvit as sv
from vitstudy.models import SMALL_MODELS


def tiny_vit(depth: int = 12, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("vitstudy_tiny_patch4_28", depth=depth, **kwargs).eval()


def images(batch: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


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


def test_zero_ratio_equals_timm_exactly():
    """r = 0 at two stages with a skip gives exactly the plain timm model's output."""
    model, x = tiny_vit(), images()
    expected = model(x)
    sv.apply_skipvit(model, sv.SkipViTSettings((4, 7), (0.0, 0.0), skip_layer=10))
    assert torch.equal(model(x), expected)


def test_dropping_off_equals_timm_exactly():
    """With dropping switched off, a Table 1 preset gives exactly the stock timm output."""
    model, x = tiny_vit(), images()
    expected = model(x)
    sv.apply_skipvit(model, "skip_6_55_s11")
    assert not torch.allclose(model(x), expected)
    with sv.dropping(model, False):
        assert torch.equal(model(x), expected)


def test_remove_restores_stock_class():
    """remove_skipvit gives back the stock class, the same state dict and the same output."""
    model, x = tiny_vit(), images()
    expected, keys = model(x), list(model.state_dict())
    sv.remove_skipvit(sv.apply_skipvit(model, "skip_6_55_s11"))
    assert type(model) is timm.models.VisionTransformer
    assert list(model.state_dict()) == keys and torch.equal(model(x), expected)


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


def test_batch_images_keep_different_sets_and_match_single_runs():
    """Images in one batch keep different token sets, and each equals its own single-image run."""
    model, x = tiny_vit(), images(batch=4)
    sv.apply_skipvit(model, "skip_6_55_s11")
    _, trace = sv.trace_forward(model, x)
    kept = trace[0].kept
    assert any(not torch.equal(kept[0], kept[b]) for b in range(1, 4))
    together = model(x)
    alone = torch.cat([model(x[b : b + 1]) for b in range(4)])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)


def test_fused_mode_appends_one_weighted_average_token():
    """Fused mode leaves prefix + kept + one fused token; the fused token is the weighted average."""
    out, trace = counting_run(sv.SkipViTSettings((6,), (0.5,), mode="fused"))
    assert out.shape[1] == 1 + 8 + 1
    tokens = torch.randn(2, 5, 3)
    weights = torch.rand(2, 5)
    expected = (tokens * (weights / weights.sum(1, keepdim=True))[..., None]).sum(1, keepdim=True)
    torch.testing.assert_close(sv.fuse_tokens(tokens, weights), expected)


def test_reinsert_inverts_gather():
    """Gathering kept and dropped tokens and re-inserting them restores the original sequence."""
    x = torch.randn(2, 9, 4)
    keep, drop = sv.topk_keep_indices(torch.rand(2, 9), 5)
    pieces = torch.cat([sv.gather_tokens(x, keep), sv.gather_tokens(x, drop)], 1)
    assert torch.equal(sv.reinsert_tokens(pieces, torch.cat([keep, drop], 1)), x)


# ----------------------------------------------------------------------------------------------------------
# Scores and gradients


def test_cls_scores_match_timm_explicit_attention_map():
    """CLS scores equal row 0 of timm's own (non-fused) attention map, averaged over heads."""
    model, x = tiny_vit(), images()
    attn = model.blocks[5].attn
    attn.fused_attn = False  # timm's explicit path: its attn_drop receives the full softmax map
    maps, qkv = {}, {}
    attn.attn_drop.register_forward_hook(lambda m, i, o: maps.__setitem__("attn", i[0]))
    attn.qkv.register_forward_hook(lambda m, i, o: qkv.__setitem__("out", o))
    with torch.no_grad():
        model(x)
    reference = maps["attn"][:, :, 0, :].mean(1)  # [B, N] from the [B, H, N, N] map
    torch.testing.assert_close(sv.cls_attention_from_qkv(qkv["out"], attn), reference)


def _block6_output_grad(preset: str):
    """Gradient magnitude [B, N] reaching block 6's output tokens, and the drop trace, for a 2-image batch."""
    model, x = tiny_vit(), images(batch=2)
    sv.apply_skipvit(model, preset)
    _, trace = sv.trace_forward(model, x)
    saved = {}

    def keep_grad(_module, _inputs, out):
        out.retain_grad()
        saved["out"] = out

    model.blocks[5].register_forward_hook(keep_grad)
    model(x).sum().backward()
    return saved["out"].grad.abs().sum(-1), trace


def test_dropped_tokens_get_gradients_through_the_skip():
    """With the skip, the dropped tokens' outputs of block L receive gradient (their earlier layers train)."""
    grad, trace = _block6_output_grad("skip_6_55_s11")
    for b in range(2):
        assert (grad[b, 1 + trace[0].dropped[b]] > 0).all()


def test_plain_dropping_cuts_dropped_tokens_gradient():
    """Without a skip, the dropped tokens' outputs of block L get no gradient (the contrast to the skip)."""
    grad, trace = _block6_output_grad("drop_6_55")
    assert grad[0, 1 + trace[0].dropped[0]].eq(0).all()


# ----------------------------------------------------------------------------------------------------------
# timm models


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


def test_flop_gain_is_zero_for_the_baseline():
    """The baseline preset (no drop layers) costs the same FLOPs on and off."""
    model = sv.apply_skipvit(tiny_vit(depth=2), "baseline")
    assert sv.flop_gain(model, (1, 28, 28))["ideal_gain_pct"] == 0


# ----------------------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(drop_layers=(6,), drop_ratios=(1.0,), skip_layer=11), r"drop ratio 1\.0 .* \[0, 1\)"),
        (dict(drop_layers=(6,), drop_ratios=(-0.1,), skip_layer=11), r"drop ratio -0\.1 .* \[0, 1\)"),
        (dict(drop_layers=(6,), drop_ratios=(0.5,), skip_layer=6), r"skip_layer=6 .* after the last drop layer"),
        (dict(drop_layers=(7, 4), drop_ratios=(0.3, 0.3), skip_layer=10), r"\(7, 4\) .* strictly increasing"),
        (dict(drop_layers=(0,), drop_ratios=(0.3,), skip_layer=10), r"drop layer 0 .* integers >= 1"),
        (dict(drop_layers=(4, 7), drop_ratios=(0.3,), skip_layer=10), r"different lengths"),
        (dict(drop_layers=(6,), drop_ratios=(0.5,)), r"skip_layer=None .* mode='skip'"),
        (dict(drop_layers=(6,), drop_ratios=(0.5,), skip_layer=11, mode="fused"), r"skip_layer=11 .* mode='fused'"),
        (dict(drop_layers=(6,), drop_ratios=(0.5,), mode="merge"), r"mode='merge' .* one of"),
        (dict(drop_layers=(4, 7), drop_ratios=(0.6, 0.5), skip_layer=10, ratio_of="original"), r"sum to 1\.1"),
    ],
)
def test_bad_settings_raise_clear_errors(kwargs, message):
    """Each bad setting raises a ValueError naming the value and what is allowed."""
    with pytest.raises(ValueError, match=message):
        sv.SkipViTSettings(**kwargs)


@pytest.mark.parametrize(
    "settings, message",
    [
        (sv.SkipViTSettings((3,), (0.5,), mode="drop"), r"drop layer 3 .* 2 blocks, expected 1 … 2"),
        (sv.SkipViTSettings((1,), (0.5,), skip_layer=3), r"skip_layer=3 is out of range: .* expected 2 … 2"),
    ],
)
def test_layers_out_of_range_raise_clear_errors(settings, message):
    """Layers beyond the model's depth are refused when the settings meet the model."""
    with pytest.raises(ValueError, match=message):
        sv.apply_skipvit(tiny_vit(depth=2), settings)


def test_model_without_class_token_is_refused():
    """A ViT without [CLS] has no CLS attention to rank by: the error says so."""
    model = timm.create_model("vitstudy_tiny_patch4_28", depth=2, class_token=False, global_pool="avg")
    with pytest.raises(ValueError, match="no \\[CLS\\] token"):
        sv.apply_skipvit(model)


def test_unknown_preset_lists_the_presets():
    """An unknown preset name lists the available ones."""
    with pytest.raises(ValueError, match="skip_6_55_s11"):
        sv.preset("skip_6_99")


# ----------------------------------------------------------------------------------------------------------
# Warm-up


def test_warmup_hook_switches_dropping_on_at_epoch_w():
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


def test_training_with_warmup_hook_trains_with_dropping_from_epoch_w(digits_cfg, tmp_path):
    """train(..., on_epoch_start=warmup_hook(1)) trains epoch 0 without and epoch 1 with dropping."""
    from vitstudy import train

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


# ----------------------------------------------------------------------------------------------------------
# Explorer (notebook 06) and study tables (notebooks 04, 05)


@pytest.fixture
def explorer():
    from vitstudy.skipvit_explorer import build_explorer

    model = sv.apply_skipvit(tiny_vit())
    return build_explorer(model, images(batch=2), labels=[3, 5], classes=[str(k) for k in range(10)], show=False)


def test_explorer_moves_show_each_stage(explorer):
    """Moving the explorer's sliders to 4,7 → 10 at 30% shows two stages keeping 35 then 25 of 49 patches."""
    from vitstudy.widgets import set_controls

    summary = set_controls(explorer, {"first_layer": 4, "second_layer": 7, "ratio": 0.3, "skip_layer": 10})
    assert summary["kept_per_stage"] == [35, 25] and summary["patches"] == 49
    assert summary["label"] == "5" or summary["label"] == "3"


def test_explorer_invalid_combination_shows_a_message(explorer):
    """A skip layer before the drop layer gives a message naming the value, not a callback error."""
    from vitstudy.widgets import set_controls

    summary = set_controls(explorer, {"first_layer": 6, "second_layer": 0, "skip_layer": 4})
    assert "skip_layer=4" in summary["error"]


def test_explore_predicts_with_and_without_dropping():
    """explore reports the prediction with dropping on and off; the off one is the stock model's."""
    from vitstudy.skipvit_explorer import explore

    model, x = tiny_vit(), images(batch=1)
    expected = str(int(model(x).argmax()))
    fig, summary = explore(sv.apply_skipvit(model), x[0], sv.TABLE1["skip_6_55_s11"])
    assert summary["prediction_drop_off"] == expected and summary["kept_per_stage"] == [23]
    assert len(fig.axes) == 3


def test_load_image_uses_the_models_transform(tmp_path):
    """An image file becomes the model's input size and channels (grey 28×28 for the small model)."""
    from PIL import Image

    from vitstudy.skipvit_explorer import load_image

    path = tmp_path / "photo.png"
    Image.new("RGB", (60, 40), (200, 10, 10)).save(path)
    assert load_image(path, tiny_vit(depth=1)).shape == (1, 28, 28)


def test_load_image_names_an_undecodable_file(tmp_path):
    """A file that is not an image raises an error naming it."""
    from vitstudy.data import CorruptImageError
    from vitstudy.skipvit_explorer import load_image

    path = tmp_path / "broken.jpg"
    path.write_bytes(b"not an image")
    with pytest.raises(CorruptImageError, match="broken.jpg"):
        load_image(path, tiny_vit(depth=1))


def test_table1_puts_the_papers_numbers_beside_ours():
    """table1 has one row per preset with the paper's throughput and top-1 next to our columns."""
    import pandas as pd

    from vitstudy import skipvit_study as st

    names = list(sv.TABLE1)
    speed = pd.DataFrame({"row": names, "setting": [sv.TABLE1[n].label for n in names], "train_im_s": 1.0,
                          "gain_pct": 0.0, "ideal_gain_pct": 1.0, "measured_over_ideal": 0.0})  # fmt: skip
    runs = pd.DataFrame({"row": names, "setting": "x", "seed": 0, "top1_drop_on": 80.0, "top1_drop_off": 81.0,
                         "loop_im_s": 1.0})  # fmt: skip
    table = st.table1(st.accuracy_summary(runs), speed, speed)
    assert list(table["row"]) == names
    assert table.loc[8, "paper_gain_pct"] == 13.23 and table.loc[8, "top1_on_diff"] == 0


def test_quick_budgets_fit_their_warmup():
    """At quick scale Table 1 rows fine-tune the baseline without warm-up; Table 3 warms up 1 of 7 epochs."""
    from vitstudy import skipvit_study as st

    table1 = st.table1_budget("quick")
    assert (table1.start, table1.warmup_epochs) == ("baseline", 0)
    table3 = st.table3_budget("quick")
    assert (table3.start, table3.warmup_epochs, table3.train.epochs) == ("scratch", 1, 7)


def test_full_budget_trains_from_scratch_with_three_seeds_and_warmup():
    """At full scale every row trains from scratch, 3 seeds, warm-up 15% of 30 epochs (5, rounded half up)."""
    from vitstudy import skipvit_study as st

    budget = st.table1_budget("full")
    assert (budget.start, budget.seeds, budget.warmup_epochs) == ("scratch", (0, 1, 2), 5)
