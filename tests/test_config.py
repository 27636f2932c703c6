import dataclasses

import pytest

from vitstudy.config import SKIPVIT_TABLE2, TrainConfig, get_scale


def test_get_scale_reads_environment(monkeypatch):
    """Without a name, VITSTUDY_SCALE picks the scale."""
    monkeypatch.setenv("VITSTUDY_SCALE", "smoke")
    assert get_scale().name == "smoke"


def test_unknown_scale_is_named():
    """An unknown scale's error names it and the allowed ones."""
    with pytest.raises(ValueError, match=r"'huge'.*smoke, quick, full, paper"):
        get_scale("huge")


def test_paper_scale_needs_imagenet(monkeypatch):
    """The paper scale says how to point it at ImageNet."""
    monkeypatch.delenv("VITSTUDY_IMAGENET", raising=False)
    with pytest.raises(ValueError, match="VITSTUDY_IMAGENET"):
        get_scale("paper")


def test_paper_scale_takes_imagenet_root(monkeypatch, tmp_path):
    """VITSTUDY_IMAGENET becomes the paper scale's data_root."""
    monkeypatch.setenv("VITSTUDY_IMAGENET", str(tmp_path))
    assert get_scale("paper").train.data_root == str(tmp_path)


@pytest.mark.parametrize(
    "field,value",
    [
        ("epochs", 0),
        ("batch_size", -1),
        ("lr", 0.0),
        ("label_smoothing", 1.0),
        ("dataset", "cifar"),
        ("train_size", 0),
    ],
)
def test_bad_setting_names_value(field, value):
    """A bad setting's error names the field and the value."""
    with pytest.raises(ValueError, match=rf"{field}={value!r}"):
        TrainConfig(**{field: value})


def test_skipvit_table2_preset_matches_paper():
    """The Table 2 preset carries the paper's hyper-parameters, as transcribed in data/reference."""
    from vitstudy.reference import load_reference

    paper = dict(zip(load_reference("skipvit_2")["parameter"], load_reference("skipvit_2")["value"].astype(float)))
    preset = dataclasses.asdict(SKIPVIT_TABLE2)
    ours = {
        "learning_rate": preset["lr"],
        **{k: preset[k] for k in ("batch_size", "epochs", "weight_decay", "warmup_lr", "mixup")},
    }
    assert ours == paper
