"""Checkpoints as safetensors (weights, optimizer tensors) plus JSON (config, epoch, metrics, optimizer scalars).

Nothing is ever unpickled. A checkpoint is committed by atomically replacing ``checkpoint.json``, written
last: a run killed at any moment leaves either the previous complete checkpoint or the new one, never a mix.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .files import atomic_path, atomic_write_json

INDEX_FILE = "checkpoint.json"


def save_weights(path: str | os.PathLike[str], state_dict: dict[str, torch.Tensor]) -> None:
    """Write a state dict as safetensors, atomically."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))


def load_weights(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Read a safetensors state dict (no pickle involved)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{str(path)!r} is not a .safetensors file; vitstudy never unpickles checkpoints")
    return load_file(str(path), device=str(device))


def flatten_optimizer_state(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into tensors (for safetensors) and the JSON-able rest."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param_id, param_state in state["state"].items():
        for key, value in param_state.items():
            if torch.is_tensor(value):
                tensors[f"state.{param_id}.{key}"] = value
            else:
                scalars.setdefault(str(param_id), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> dict[str, Any]:
    """Inverse of ``flatten_optimizer_state``."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, param_id, key = name.split(".", 2)
        state.setdefault(int(param_id), {})[key] = value
    for param_id, values in rest["scalars"].items():
        state.setdefault(int(param_id), {}).update(values)
    # JSON turned tuples (AdamW's betas) into lists; optimizers expect them back as tuples.
    groups = [
        {k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in g.items()}
        for g in rest["param_groups"]
    ]
    return {"state": state, "param_groups": groups}


def save_checkpoint(
    run_dir: str | os.PathLike[str],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    meta: dict[str, Any],
) -> Path:
    """Write weights and optimizer state for ``meta['epoch']``, then commit by replacing ``checkpoint.json``."""
    run_dir = Path(run_dir)
    epoch = int(meta["epoch"])
    weights_name = f"model-e{epoch:04d}.safetensors"
    save_weights(run_dir / weights_name, model.state_dict())
    index = dict(meta, weights=weights_name)
    if optimizer is not None:
        optim_name = f"optimizer-e{epoch:04d}.safetensors"
        tensors, rest = flatten_optimizer_state(optimizer.state_dict())
        save_weights(run_dir / optim_name, tensors)
        index.update(optimizer=optim_name, optimizer_rest=rest)
    atomic_write_json(run_dir / INDEX_FILE, index)
    _remove_stale(run_dir, keep={weights_name, index.get("optimizer")})
    return run_dir / INDEX_FILE


def read_checkpoint_index(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The committed checkpoint's metadata, or None when the run has none yet."""
    path = Path(run_dir) / INDEX_FILE
    if not path.is_file():
        return None
    return read_run_json(path)


def read_run_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A run folder's JSON metadata file (``checkpoint.json``, ``final.json``). A damaged one (a disk that filled
    up, a hand edit) raises a one-line ``ValueError`` naming the file and the way out, since resuming from it is
    impossible and the user only needs to know which file to drop."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        reason = err.msg if isinstance(err, json.JSONDecodeError) else "not UTF-8 text"
        where = f" at line {err.lineno} column {err.colno}" if isinstance(err, json.JSONDecodeError) else ""
        raise ValueError(
            f"{path} is damaged ({reason}{where}): start the run over with --no-resume (resume=False in Python), "
            "or delete that file"
        ) from None


def load_checkpoint(
    run_dir: str | os.PathLike[str],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
) -> dict[str, Any]:
    """Load the committed checkpoint into ``model`` (and ``optimizer``); return its metadata."""
    run_dir = Path(run_dir)
    index = read_checkpoint_index(run_dir)
    if index is None:
        raise FileNotFoundError(f"{run_dir} holds no {INDEX_FILE}: nothing to resume or load")
    model.load_state_dict(load_weights(run_dir / index["weights"]))
    if optimizer is not None and "optimizer" in index:
        tensors = load_weights(run_dir / index["optimizer"])
        optimizer.load_state_dict(unflatten_optimizer_state(tensors, index["optimizer_rest"]))
    return index


def _remove_stale(run_dir: Path, keep: set[str | None]) -> None:
    for pattern in ("model-e*.safetensors", "optimizer-e*.safetensors"):
        for path in run_dir.glob(pattern):
            if path.name not in keep:
                path.unlink(missing_ok=True)
