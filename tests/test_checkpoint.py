import json

import pytest
import torch

from vitstudy import checkpoint
from vitstudy.files import atomic_path, atomic_write_json


def _model_and_optimizer():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(5, 4)).sum().backward()
    optimizer.step()
    return model, optimizer


def test_optimizer_state_round_trips():
    """Flattening AdamW's state for safetensors and back gives the same state dict."""
    _, optimizer = _model_and_optimizer()
    tensors, rest = checkpoint.flatten_optimizer_state(optimizer.state_dict())
    restored = checkpoint.unflatten_optimizer_state(tensors, json.loads(json.dumps(rest)))
    original = optimizer.state_dict()
    assert restored["param_groups"] == original["param_groups"]
    for pid, state in original["state"].items():
        for key, value in state.items():
            assert torch.equal(restored["state"][pid][key], value)


def test_checkpoint_round_trips(tmp_path):
    """save_checkpoint then load_checkpoint restores weights, optimizer and metadata."""
    model, optimizer = _model_and_optimizer()
    checkpoint.save_checkpoint(tmp_path, model, optimizer, {"epoch": 3, "note": "x"})
    fresh, fresh_optimizer = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3)), None
    fresh_optimizer = torch.optim.AdamW(fresh.parameters(), lr=0.5)
    meta = checkpoint.load_checkpoint(tmp_path, fresh, fresh_optimizer)
    assert meta["epoch"] == 3 and meta["note"] == "x"
    assert torch.equal(fresh[0].weight, model[0].weight)
    assert fresh_optimizer.param_groups[0]["lr"] == 0.1


def test_only_the_committed_epoch_files_remain(tmp_path):
    """Committing epoch 2 removes epoch 1's weight and optimizer files."""
    model, optimizer = _model_and_optimizer()
    checkpoint.save_checkpoint(tmp_path, model, optimizer, {"epoch": 1})
    checkpoint.save_checkpoint(tmp_path, model, optimizer, {"epoch": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint.json",
        "model-e0002.safetensors",
        "optimizer-e0002.safetensors",
    ]


def test_checkpoint_files_are_safetensors_and_json(tmp_path):
    """Nothing in a checkpoint folder needs pickle: safetensors and JSON only."""
    model, optimizer = _model_and_optimizer()
    checkpoint.save_checkpoint(tmp_path, model, optimizer, {"epoch": 0})
    assert {p.suffix for p in tmp_path.iterdir()} == {".json", ".safetensors"}


def test_failed_write_keeps_previous_file(tmp_path):
    """An exception during an atomic write leaves the old file intact and no temporary file behind."""
    target = tmp_path / "data.json"
    atomic_write_json(target, {"good": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert json.loads(target.read_text()) == {"good": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["data.json"]


def test_load_refuses_pickles(tmp_path):
    """load_weights refuses anything that is not .safetensors."""
    with pytest.raises(ValueError, match="never unpickles"):
        checkpoint.load_weights(tmp_path / "model.pt")


def test_a_damaged_index_names_the_file_and_the_way_out(tmp_path):
    """A checkpoint.json that is not JSON is one line naming the file, --no-resume and deleting it; no JSON trace."""
    (tmp_path / checkpoint.INDEX_FILE).write_text("{\n'epoch': 1}")
    with pytest.raises(ValueError) as caught:
        checkpoint.read_checkpoint_index(tmp_path)
    message = str(caught.value)
    assert str(tmp_path / checkpoint.INDEX_FILE) in message and "--no-resume" in message and "delete" in message
    assert "\n" not in message and caught.value.__cause__ is None
