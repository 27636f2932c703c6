"""torch.compile on both wrappers: compiled == eager within a tolerance, and the compile table's pieces.

The equality tests compile with ``backend="aot_eager"``: dynamo's graph capture and AOTAutograd's functionalised
forward and backward, without code generation (inductor takes tens of seconds per graph on a CPU). Inductor itself
runs in the one test marked for it, in the compile measurement and in the GPU command.
"""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import torch

from vitstudy import skipvit as sv
from vitstudy.measure import compile_speed
from vitstudy.models import create_model
from vitstudy.multiexit import MultiExitViT

TOLERANCE = compile_speed.TOLERANCE  # rtol 1e-3, atol 1e-4: the table's own


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return create_model("vitstudy_tiny_patch4_28", depth=4).eval()


def batches(count: int = 3, size: int = 8) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [torch.randn(size, 1, 28, 28, generator=generator) for _ in range(count)]


@pytest.mark.parametrize("policy", ["forced", "batch", "sample"])
def test_multiexit_compiled_equals_eager(vit, policy):
    """Each exit policy compiles and gives eager's exit blocks and logits, batch after batch (the per-sample
    policy's batch shrinks by data: the compiled pieces recompile for it and stay equal)."""
    model = MultiExitViT(
        vit, (1, 2, 3), forced_exit=2 if policy == "forced" else None, policy="sample" if policy == "forced" else policy
    ).eval()
    xs = batches()
    if policy != "forced":
        model.threshold = compile_speed.operating_threshold(model, torch.cat(xs))
    compiled = torch.compile(model, backend="aot_eager")
    with torch.no_grad():
        for x in xs:
            expected, got = model(x), compiled(x)
            assert torch.equal(got.exit_block, expected.exit_block)
            torch.testing.assert_close(got.logits, expected.logits, **TOLERANCE)
    if policy == "sample":
        assert 1 < len(set(torch.cat([model(x).exit_block for x in xs]).tolist())), "no image left early"


@pytest.mark.parametrize("row", ["skipvit skip", "skipvit fused", "skipvit drop"])
def test_skipvit_compiles_in_one_graph_and_equals_eager(vit, row):
    """Each SkipViT mode compiles without a graph break (fullgraph) and gives eager's logits and gradients."""
    settings = (
        sv.SkipViTSettings((2,), (0.5,), skip_layer=4)
        if row == "skipvit skip"
        else (sv.SkipViTSettings((2,), (0.5,), mode=row.split()[1]))
    )
    model = sv.configure(sv.apply_skipvit(create_model("vitstudy_tiny_patch4_28", depth=4)), settings).train()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    x = batches(1)[0]
    expected = model(x)
    expected.square().sum().backward()
    reference = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    got = compiled(x)
    got.square().sum().backward()
    torch.testing.assert_close(got, expected, **TOLERANCE)
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, reference[name], **TOLERANCE, msg=name)


def test_configure_keeps_one_capture_per_drop_layer(vit):
    """The qkv captures follow the drop layers through configure and go with remove_skipvit."""
    model = sv.apply_skipvit(create_model("vitstudy_tiny_patch4_28"), "skip_4_7_30_s10")
    hooked = lambda: [i for i, b in enumerate(model.blocks, 1) if b.attn.qkv._forward_hooks]  # noqa: E731
    assert hooked() == [4, 7]
    sv.configure(model, "skip_6_55_s11")
    assert hooked() == [6]
    sv.remove_skipvit(model)
    assert hooked() == [] and not hasattr(model.blocks[5].attn.qkv, "_skipvit_capture")


def test_graph_report_names_the_exit_sync(vit):
    """explain finds no break in a forced exit, and in the per-sample exit the host sync inside the exit loop."""
    forced = compile_speed.graph_report(MultiExitViT(vit, (1, 2, 3), forced_exit=2), batches(1)[0])
    assert forced["graph_breaks"] == 0 and forced["graphs"] == 1
    model = MultiExitViT(vit, (1, 2, 3), policy="sample")
    model.threshold = compile_speed.operating_threshold(model, batches(1)[0])
    sample = compile_speed.graph_report(model, batches(1)[0])
    read = ("item()", "tolist()")  # the exit decision's one read to the host: a scalar at batch 1, a list above
    assert sample["graph_breaks"] > 0 and any(sync in sample["break_reasons"] for sync in read)
    assert "inside a loop" in sample["break_reasons"]


def test_every_setting_wraps_to_logits():
    """Each row of the compile table is a model that maps images to [B, classes] logits (depth 12: the report's
    exits and SkipViT's layers)."""
    vit, x = create_model("vitstudy_tiny_patch4_28"), batches(1, 4)[0]
    for setting in compile_speed.SETTINGS:
        with torch.no_grad():
            assert compile_speed.wrapped(setting, vit, x).eval()(x).shape == (4, 10), setting


def test_inductor_compiles_skipvit_skip_as_eager():
    """The default backend (inductor, generated C++) on the fixed path: SkipViT's skip mode equals eager."""
    model = sv.configure(
        sv.apply_skipvit(create_model("vitstudy_tiny_patch4_28", depth=2)),
        sv.SkipViTSettings((1,), (0.5,), skip_layer=2),
    ).eval()
    result = compile_speed.compiled_matches(model, batches(1, 2)[0], "inductor")
    assert result["compiles"], result


def test_compile_table_resumes_at_the_first_unfinished_row(monkeypatch, tmp_path):
    """An interrupted measurement keeps its finished rows: a second run measures only the rows still missing, and
    the table it writes is the same frame as an uninterrupted one."""
    monkeypatch.setenv("VITSTUDY_CACHE", str(tmp_path))
    measured = []

    def fake_row(spec, setting, vit, images, budget, device="cpu"):
        if setting == "skipvit skip" and not measured.count("interrupt"):
            measured.append("interrupt")
            raise KeyboardInterrupt
        measured.append(setting)
        return (
            {"model": spec.name, "setting": setting, "graph_breaks": 0, "compiles": True, "error": ""},
            pd.DataFrame({"arm": ["eager"], "seconds_per_call": [0.1]}),
        )

    monkeypatch.setattr(compile_speed, "setting_row", fake_row)
    budget = compile_speed.budget("smoke")
    spec = budget.models[0]
    with pytest.raises(KeyboardInterrupt):
        compile_speed.compile_rows(spec, budget)
    done_first = [s for s in measured if s != "interrupt"]
    assert done_first == list(budget.settings[: budget.settings.index("skipvit skip")])
    table, raw = compile_speed.compile_rows(spec, budget)
    assert measured[len(done_first) + 1 :] == list(budget.settings[budget.settings.index("skipvit skip") :])
    assert list(table["setting"]) == list(budget.settings) and len(raw) == len(budget.settings)
    again, _ = compile_speed.compile_rows(spec, budget)
    pd.testing.assert_frame_equal(again, table)
    assert not list(tmp_path.rglob(".*.tmp"))


def test_a_model_with_its_own_settings_gets_only_those_rows(monkeypatch, tmp_path):
    """ViT-S/16 gets one row per wrapper at quick (its rows compile for minutes each); a model's own ``settings``
    choose its rows, in their order, and the default model keeps every setting."""
    monkeypatch.setenv("VITSTUDY_CACHE", str(tmp_path))

    def fake_row(spec, setting, vit, images, budget, device="cpu"):
        return {"model": spec.name, "setting": setting}, pd.DataFrame({"arm": ["eager"], "seconds_per_call": [0.1]})

    monkeypatch.setattr(compile_speed, "setting_row", fake_row)
    budget = compile_speed.budget("smoke")
    spec = dataclasses.replace(budget.models[0], settings=("skipvit skip", "plain"))
    table, _ = compile_speed.compile_rows(spec, budget)
    assert list(table["setting"]) == ["skipvit skip", "plain"]
    quick = compile_speed.budget("quick")
    assert quick.models[0].settings is None and set(quick.models[1].settings) < set(compile_speed.SETTINGS)
