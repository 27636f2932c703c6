"""SkipViT settings and presets: validation messages, labels, the paper's rows."""

from __future__ import annotations

import pytest

from vitstudy import skipvit as sv


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
        (dict(drop_layers=(6,), drop_ratios=(0.5,), skip_layer=11, placement="mlp"), r"placement='mlp' .* one of"),
        (dict(drop_layers=(6,), drop_ratios=(0.5,), mode="fused", fuse_weights="mean"), r"fuse_weights='mean'"),
    ],
)
def test_bad_settings_raise_clear_errors(kwargs, message):
    """Each bad setting raises a ValueError naming the value and what is allowed."""
    with pytest.raises(ValueError, match=message):
        sv.SkipViTSettings(**kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            dict(drop_layers=(6,), drop_ratios=(0.5,), skip_layer=6),
            "skip_layer=6 is not allowed: expected an integer after the last drop layer (6), i.e. >= 7",
        ),
        (
            dict(drop_layers=(7, 4), drop_ratios=(0.3, 0.3), skip_layer=10),
            "drop_layers=(7, 4) is not allowed: expected strictly increasing layers",
        ),
        (
            dict(drop_layers=(6,), drop_ratios=(0.5,), mode="merge"),
            "mode='merge' is not allowed: expected one of ('skip', 'fused', 'drop')",
        ),
        (
            dict(ratio_of="all"),
            "ratio_of='all' is not allowed: expected one of ('surviving', 'original')",
        ),
    ],
)
def test_messages_follow_the_package_validation_style(kwargs, message):
    """Choices and ranges read 'name=value is not allowed: expected …', as config.check writes them."""
    with pytest.raises(ValueError) as excinfo:
        sv.SkipViTSettings(**kwargs)
    assert str(excinfo.value) == message


def test_single_numbers_become_one_stage():
    """A single drop layer and ratio given as numbers become one-element tuples."""
    settings = sv.SkipViTSettings(6, 0.55, skip_layer=11)
    assert (settings.drop_layers, settings.drop_ratios) == ((6,), (0.55,))


def test_labels_use_the_papers_wording():
    """Labels read as the paper's Table 1 rows."""
    labels = [sv.TABLE1[n].label for n in ("baseline", "fused_6_45", "skip_4_7_30_s10")]
    assert labels == ["baseline", "6 / 45% / fused token", "4,7 / 30%,30% / skip 10"]


def test_unknown_preset_lists_the_presets():
    """An unknown preset name lists the available ones."""
    with pytest.raises(ValueError, match="skip_6_55_s11"):
        sv.preset("skip_6_99")


def test_table3_is_the_two_stage_skip_10_row():
    """Table 3's configuration is Table 1's 4,7 at 30%, skip 10."""
    assert sv.TABLE3 == sv.preset("skip_4_7_30_s10") and sv.TABLE3.label == "4,7 / 30%,30% / skip 10"


def test_placement_defaults_follow_the_mode():
    """The fused mode drops after block L's attention (EViT's code); skip and drop after the whole block."""
    assert sv.TABLE1["fused_6_45"].placement == "attention" and sv.TABLE1["fused_6_45"].fuse_weights == "raw"
    assert sv.TABLE1[sv.HEADLINE].placement == "block"
    assert sv.SkipViTSettings((6,), (0.5,), skip_layer=11, placement="attention").label == (
        "6 / 50% / skip 11 (selected after the attention)"
    )
