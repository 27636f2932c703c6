"""multiexit.joint and the joint variant of experiments.multiexit.common: the joint loss on known tensors, the
model it trains, the variant in a study (tables, sweep, operating points, explorer) and its cached run."""

import copy
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from vitstudy import bench, multiexit
from vitstudy import train as train_module
from vitstudy.experiments.multiexit import common, real_data_exit
from vitstudy.experiments.multiexit.study import build_study
from vitstudy.multiexit import JointExitViT
from vitstudy.widgets import set_controls

NO_TIMING = bench.CompareSettings(rounds=2, min_run_time=0.001, warmup_calls=0, bootstrap=100, peak_size=64)
DIGITS_JOINT = common.JointBudget("test", epochs=1, lr=1e-3, warmup_epochs=0.5, exits=(1, 2))


def _logits(batch=6, heads=4, classes=5, seed=0):
    return torch.randn(batch, heads, classes, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------------------------------------
# The loss


def test_distillation_is_zero_when_every_exit_says_what_the_final_head_says():
    """Exit logits equal to the final ones: no distillation, and the loss is deep supervision alone."""
    final = _logits(heads=1)
    logits = final.expand(-1, 4, -1).clone()
    targets = torch.tensor([0, 1, 2, 3, 4, 0])
    terms = multiexit.joint_loss_terms(logits, targets)
    assert terms.distillation.tolist() == pytest.approx([0.0, 0.0, 0.0], abs=1e-6)
    ce = F.cross_entropy(final[:, 0], targets)
    assert terms.total(0.3).item() == pytest.approx((ce + 3 * 0.7 * ce).item(), rel=1e-6)


def test_joint_loss_terms_match_cross_entropy_and_a_hand_written_kl():
    """Each exit's term: its cross-entropy, and T^2 * sum p_final (log p_final - log p_exit) averaged over images."""
    logits, targets, temperature = _logits(), torch.tensor([4, 3, 2, 1, 0, 1]), 2.0
    terms = multiexit.joint_loss_terms(logits, targets, temperature=temperature)
    teacher = (logits[:, -1] / temperature).softmax(-1)
    for i in range(3):
        student = (logits[:, i] / temperature).softmax(-1)
        kl = (teacher * (teacher.log() - student.log())).sum(-1).mean() * temperature**2
        assert terms.distillation[i].item() == pytest.approx(kl.item(), rel=1e-5)
        assert terms.exit_ce[i].item() == pytest.approx(F.cross_entropy(logits[:, i], targets).item(), rel=1e-6)
    assert terms.final.item() == pytest.approx(F.cross_entropy(logits[:, -1], targets).item(), rel=1e-6)
    weight = multiexit.DISTILL_WEIGHT
    expected = terms.final + ((1 - weight) * terms.exit_ce + weight * terms.distillation).sum()
    assert multiexit.joint_loss(logits, targets).item() == pytest.approx(expected.item(), rel=1e-6)


def test_the_final_head_teaches_but_is_not_taught():
    """The final logits' gradient is their own cross-entropy's alone: the distillation target is detached."""
    logits = _logits().requires_grad_()
    targets = torch.tensor([0, 1, 2, 3, 4, 0])
    multiexit.joint_loss(logits, targets).backward()
    alone = logits.detach().clone().requires_grad_()
    F.cross_entropy(alone[:, -1], targets).backward()
    torch.testing.assert_close(logits.grad[:, -1], alone.grad[:, -1])
    assert logits.grad[:, :-1].abs().sum() > 0


def test_the_loop_criterion_is_used_at_every_head():
    """``criterion`` (the loop's: label smoothing, mixup's soft targets) computes every head's cross-entropy."""
    logits, targets = _logits(), torch.tensor([0, 1, 2, 3, 4, 0])
    smoothed = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    terms = multiexit.joint_loss_terms(logits, targets, smoothed)
    assert terms.exit_ce[1].item() == pytest.approx(smoothed(logits[:, 1], targets).item())
    loss, final = multiexit.training_loss(logits, targets, smoothed)
    assert torch.equal(final, logits[:, -1]) and loss.item() == pytest.approx(terms.total().item())


def test_bad_logits_are_refused():
    """Logits without an exit column are one line naming the shape."""
    with pytest.raises(ValueError, match=r"logits.shape=\(6, 5\) is not allowed"):
        multiexit.joint_loss(torch.zeros(6, 5), torch.zeros(6, dtype=torch.long))


# ----------------------------------------------------------------------------------------------------------
# The model the loop trains


def test_training_forward_gives_every_head_and_eval_forward_is_the_plain_vit(tiny_vit, images):
    """Train mode: [B, exits + 1, C], the last column timm's own output; eval mode: timm's forward itself."""
    vit = copy.deepcopy(tiny_vit)
    joint = JointExitViT(vit, (3, 6, 9))
    with torch.no_grad():
        every = joint.train().all_logits(images)
        assert joint(images).shape == (12, 4, 10)
        joint.eval()
        torch.testing.assert_close(every[:, -1], vit(images))
        assert torch.equal(joint(images), vit(images))


def test_training_and_inference_paths_agree_at_every_exit(tiny_vit, images):
    """Each exit column of the training forward is what the joint MultiExitViT computes when forced out there."""
    joint = JointExitViT(copy.deepcopy(tiny_vit), (3, 6, 9)).eval()
    torch.nn.init.normal_(joint.exit_heads[1].weight, generator=torch.Generator().manual_seed(3))  # heads differ
    model = joint.exit_model()
    with torch.no_grad():
        every = joint.all_logits(images)
        for column, block in enumerate((3, 6, 9)):
            torch.testing.assert_close(model(images, forced_exit=block).logits, every[:, column])
    assert model.variant == "joint" and model.vit is joint.vit and model.final_head is joint.vit.head


def test_gradient_reaches_the_backbone_up_to_each_exit(tiny_vit, images):
    """An exit's loss alone trains the blocks before it and none after; the joint loss reaches every block."""
    joint = JointExitViT(copy.deepcopy(tiny_vit), (3, 6, 9)).train()
    targets = torch.arange(12) % 10
    F.cross_entropy(joint(images)[:, 0], targets).backward()
    assert joint.vit.blocks[0].mlp.fc1.weight.grad.abs().sum() > 0 and joint.exit_heads[0].weight.grad is not None
    assert all(p.grad is None or not p.grad.any() for p in joint.vit.blocks[3:].parameters())
    joint.zero_grad(set_to_none=True)
    multiexit.joint_loss(joint(images), targets).backward()
    assert all(b.attn.qkv.weight.grad.abs().sum() > 0 for b in joint.vit.blocks)
    assert all(h.weight.grad.abs().sum() > 0 for h in joint.exit_heads)


def test_exit_model_takes_a_subset_of_the_trained_heads(tiny_vit):
    """A single-exit setting shares the trained head of that exit; exits that were not trained are refused."""
    joint = JointExitViT(tiny_vit, (3, 6, 9))
    assert joint.exit_model((6,)).exit_heads[0] is joint.exit_heads[1]
    assert all(h is not joint.vit.head for h in joint.exit_heads)
    with pytest.raises(ValueError, match=r"exits=\(4,\) is not allowed: expected a subset of the trained exits"):
        joint.exit_model((4,))


def test_frozen_feature_fitting_refuses_the_joint_variant(tiny_vit, digits_study):
    """joint's heads train with the backbone: fitting them on frozen features, or asking build_study to, is refused."""
    with pytest.raises(ValueError, match="variant='joint' is not allowed"):
        multiexit.fit_heads(multiexit.MultiExitViT(tiny_vit, (3,), "joint"), digits_study.features["train"])
    with pytest.raises(ValueError, match=r"variant \(heads on a frozen backbone\)='joint' is not allowed"):
        build_study(digits_study.scale, digits_study.vit, digits_study.splits, ["joint"])


# ----------------------------------------------------------------------------------------------------------
# The variant in a study


@pytest.fixture(scope="module")
def joint_study(digits_study, tmp_path_factory):
    """The digits study (a copy: the shared one keeps its four variants) with the joint variant trained one epoch."""
    study = dataclasses.replace(digits_study, models=dict(digits_study.models), variant_features={})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VITSTUDY_CACHE", str(tmp_path_factory.mktemp("joint-cache")))
        result = common.add_joint_variant(study, DIGITS_JOINT, progress=False)
    return study, result


def test_the_joint_variant_joins_the_study_with_its_own_backbone(joint_study, digits_study):
    """joint sits beside the four frozen-backbone variants, at both exit sets, on features of its trained backbone."""
    study, result = joint_study
    assert study.variants == (*multiexit.FROZEN_VARIANTS, "joint") and digits_study.variants[-1] == "separate"
    assert {e for v, e in study.models if v == "joint"} == {(1,), (1, 2)}
    assert study.model("joint", (1, 2)).vit is result.model.vit and result.model.vit is not study.vit
    own, shared = study.features_of("joint")["test"], study.features["test"]
    assert torch.equal(own.targets, shared.targets) and not torch.equal(own.features, shared.features)
    assert (study.head_history["variant"] == "joint").sum() == DIGITS_JOINT.epochs


def test_the_joint_settings_offline_rows_match_its_forward(joint_study):
    """simulate on the joint backbone's recorded logits predicts what the timed joint model does."""
    study, _ = joint_study
    model = study.configured("joint", (1, 2), 0.3, "sample")
    x = torch.stack([study.splits.test[i][0] for i in range(32)])
    with torch.inference_mode():
        out = model(x)
    sim = multiexit.simulate(study.logits("joint", (1, 2))[:32], (1, 2), study.depth, 0.3, "sample")
    assert torch.equal(out.exit_block, sim.exit_block) and torch.equal(out.logits.argmax(-1), sim.predictions)


def test_joint_is_in_table_5_2_the_sweep_and_the_operating_points(joint_study):
    """Table 5.2, the threshold sweep and the per-variant operating points cover every variant the study holds."""
    study, _ = joint_study
    table, _ = common.table_5_2(study, 0.9, 16, NO_TIMING, exit_sets=[(1,)], policies=["sample"])
    assert table["variant"].iloc[:-1].tolist() == [*multiexit.FROZEN_VARIANTS, "joint"]
    assert table.set_index("setting").loc["joint/1/sample", "images_per_s"] > 0
    sweep = common.threshold_sweep(study, (0.5, 1.0), exit_sets=[(1,), (1, 2)])
    assert set(sweep["variant"]) == set(study.variants) and len(sweep) == 5 * 2 * 2
    points = real_data_exit.operating_points(study, 0.5, (0.5, 1.0), exit_sets=[(1,), (1, 2)])
    assert [p["variant"] for p in points] == list(study.variants)
    fig = real_data_exit.accuracy_speed_curves(sweep)
    assert fig.axes[-1].get_title() == "joint (ours)"


def test_the_explorer_offers_the_joint_variant(joint_study):
    """The explorer's variant selector lists joint, and choosing it shows the joint setting."""
    study, _ = joint_study
    widget = multiexit.explorer_widget(study, show=False, count=4)
    chosen = set_controls(widget, {"variant": "joint", "exits": "1,2", "policy": "sample", "threshold": 0.0})
    assert chosen.summary["variant"] == "joint" and chosen.summary["exited_pct"] == 100


def test_a_second_run_loads_the_cached_joint_run(joint_study, digits_study, monkeypatch, tmp_path):
    """Adding the variant again reads the finished run from its folder: no epoch is trained."""
    study, first = joint_study
    monkeypatch.setenv("VITSTUDY_CACHE", str(first.run_dir.parent.parent))
    monkeypatch.setattr(train_module, "train_one_epoch", lambda *a, **k: pytest.fail("retrained a cached run"))
    again = dataclasses.replace(digits_study, models=dict(digits_study.models), variant_features={})
    result = common.add_joint_variant(again, DIGITS_JOINT, progress=False)
    assert result.run_dir == first.run_dir and result.run_dir.parent.name == "multiexit"
    torch.testing.assert_close(again.logits("joint", (1, 2)), study.logits("joint", (1, 2)))


def test_budgets_and_run_folders():
    """Every report scale has a budget; the run folder names the study model, the settings and the loss."""
    assert set(common.JOINT_BUDGETS) == set(common.REAL_DATA_BUDGETS)
    with pytest.raises(ValueError, match=r"epochs=0 is not allowed"):
        dataclasses.replace(common.joint_budget("quick"), epochs=0)
    settings = common.loss_settings((3, 6, 9))
    assert settings["temperature"] == multiexit.DISTILL_TEMPERATURE and not math.isnan(settings["weight"])
