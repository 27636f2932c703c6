"""multiexit.heads: recorded features against timm and the forward, the cache, head fitting on digits."""

import dataclasses

import pandas as pd
import pytest
import torch

from vitstudy import multiexit
from vitstudy.multiexit import MultiExitViT


def test_recorded_final_features_are_timms_pre_logits(tiny_vit, images):
    """The last recorded column is timm's own pre-logits vector; every exit has one column."""
    model = MultiExitViT(tiny_vit).eval()
    features = multiexit.record_features(model, images)
    with torch.inference_mode():
        reference = tiny_vit.forward_head(tiny_vit.forward_features(images), pre_logits=True)
    assert features.shape == (12, 4, tiny_vit.embed_dim)
    torch.testing.assert_close(features[:, -1], reference)


@pytest.mark.parametrize("policy, batch_size", [("sample", None), ("batch", 4)])
def test_offline_simulation_matches_the_model(tiny_vit, images, mixed_threshold, policy, batch_size):
    """Exits and predictions computed offline from recorded features equal the model's forward."""
    model = MultiExitViT(tiny_vit, policy=policy).eval()
    model.threshold = mixed_threshold(model, images)
    record = multiexit.ExitFeatures(
        multiexit.record_features(model, images), torch.zeros(12, dtype=torch.long), (3, 6, 9), 12
    )
    logits = multiexit.logits_from_features(model, record)
    sim = multiexit.simulate(logits, (3, 6, 9), 12, model.threshold, policy, "softmax", batch_size)
    with torch.inference_mode():
        outs = [model(chunk) for chunk in images.split(batch_size or len(images))]
    assert torch.equal(sim.exit_block, torch.cat([o.exit_block for o in outs]))
    assert torch.equal(sim.predictions, torch.cat([o.logits for o in outs]).argmax(-1))


def test_features_of_exits_that_were_not_recorded_are_refused(tiny_vit, images):
    """Asking recorded features for an exit they do not hold names the exits they do hold."""
    record = multiexit.ExitFeatures(torch.zeros(2, 2, 4), torch.zeros(2, dtype=torch.long), (3,), 12)
    with pytest.raises(ValueError, match=r"exits \[6\] were not recorded: these features hold exits \(3,\)"):
        record.columns((6,))


def test_cached_features_are_read_back_unchanged(digits_study, tmp_path):
    """A second recording of a split with a cache path loads the saved features instead of recomputing them."""
    recorder = MultiExitViT(digits_study.vit, (1, 2)).eval()
    path = tmp_path / "test.safetensors"
    first = multiexit.recorded_features(recorder, digits_study.splits.test, 128, path, progress=False)
    again = multiexit.recorded_features(recorder, None, 128, path, progress=False)  # no data set: must come from disk
    assert path.is_file()
    assert torch.equal(first.features, again.features) and torch.equal(first.targets, again.targets)


def test_head_training_improves_exit_accuracy_on_digits(digits_cfg, tmp_path):
    """Fitting the exit head on frozen features raises exit-1 top-1 over the untrained copy of the final head."""
    from vitstudy.train import train

    result = train(dataclasses.replace(digits_cfg, epochs=3), tmp_path, progress=False)
    model = MultiExitViT(result.model, exits=(1,), variant="separate", forced_exit=1).eval()
    features = {
        name: multiexit.recorded_features(model, getattr(result.splits, name), 256, progress=False)
        for name in ("train", "test")
    }

    def exit_top1() -> float:
        logits = multiexit.logits_from_features(model, features["test"])[:, 0]
        return (logits.argmax(-1) == features["test"].targets).float().mean().item()

    before = exit_top1()
    history = multiexit.fit_heads(model, features["train"], epochs=100, lr=1e-2)
    assert exit_top1() > before + 0.1
    assert history["loss"].iloc[-1] < history["loss"].iloc[0]


def test_same_variant_fits_nothing(tiny_vit):
    """The ``same`` variant keeps the trained final head: fitting returns no history and changes no weight."""
    model = MultiExitViT(tiny_vit, variant="same")
    before = tiny_vit.head.weight.clone()
    record = multiexit.ExitFeatures(
        torch.randn(8, 4, tiny_vit.embed_dim), torch.zeros(8, dtype=torch.long), (3, 6, 9), 12
    )
    assert multiexit.fit_heads(model, record, epochs=2).empty
    assert torch.equal(tiny_vit.head.weight, before)


@pytest.mark.parametrize("variant", ["finetune", "separate"])
def test_fitted_heads_are_read_back_from_the_cache_without_fitting_again(tiny_vit, tmp_path, monkeypatch, variant):
    """Notebooks 02, 03, 07 and 10 share one fit: the second call loads the same weights and history and fits
    nothing."""
    generator = torch.Generator().manual_seed(0)
    record = multiexit.ExitFeatures(
        torch.randn(64, 4, tiny_vit.embed_dim, generator=generator),
        torch.randint(0, 10, (64,), generator=generator),
        (3, 6, 9),
        12,
    )
    path = tmp_path / "heads.safetensors"
    fitted = MultiExitViT(tiny_vit, (3, 9), variant)
    history = multiexit.fitted_heads(fitted, record, epochs=2, seed=0, cache_path=path)
    assert path.is_file() and not list(tmp_path.glob(".*.tmp"))

    calls = []
    monkeypatch.setattr(multiexit.heads, "fit_linear", lambda *args: calls.append(args) or [])
    loaded = MultiExitViT(tiny_vit, (3, 9), variant)
    assert not any(torch.equal(a.weight, b.weight) for a, b in zip(loaded.exit_heads, fitted.exit_heads))
    read_back = multiexit.fitted_heads(loaded, record, epochs=2, seed=0, cache_path=path)
    assert not calls
    pd.testing.assert_frame_equal(read_back, history)
    for a, b in zip([*loaded.exit_heads, loaded.final_head], [*fitted.exit_heads, fitted.final_head]):
        assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
