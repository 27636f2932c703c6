"""``python -m vitstudy``: a user's mistake is one line on stderr naming the value and the fix, exit status 2."""

import os
import subprocess
import sys
import types

import pytest

from vitstudy.__main__ import MEASUREMENTS, main, parse_overrides
from vitstudy.config import TrainConfig

# Seconds-long settings for the commands that get as far as building data and a model.
DIGITS = ["dataset=digits", "train_size=64", "val_size=16", "epochs=1", "batch_size=16", 'model_kwargs={"depth": 1}']


def _one_line_error(capfd) -> str:
    """stderr of the last command, checked to be exactly one line and no traceback."""
    err = capfd.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


def test_data_command_names_missing_root(tmp_path, capfd):
    """`vitstudy data --root DIR` without the files exits 2 naming the folder."""
    assert main(["data", "--no-install", "--root", str(tmp_path)]) == 2
    assert str(tmp_path) in _one_line_error(capfd)


def test_data_command_finds_fashion_mnist(capsys):
    """`vitstudy data` reports where Fashion-MNIST is."""
    assert main(["data", "--no-install"]) == 0
    assert "Fashion-MNIST:" in capsys.readouterr().out


def test_train_names_missing_data_root(tmp_path, capfd):
    """Training on Fashion-MNIST from a folder without it names the folder."""
    assert main(["train", "--run-dir", str(tmp_path / "run"), "--set", f"data_root={tmp_path / 'nowhere'}"]) == 2
    assert f"data_root '{tmp_path / 'nowhere'}' does not hold Fashion-MNIST" in _one_line_error(capfd)


def test_train_imagefolder_without_data_root_says_what_to_pass(tmp_path, capfd):
    """dataset=imagefolder without data_root says which folders data_root must hold."""
    assert main(["train", "--run-dir", str(tmp_path), "--set", "dataset=imagefolder", "train_size=null"]) == 2
    assert "needs data_root=" in _one_line_error(capfd)


def test_train_names_unknown_model(tmp_path, capfd):
    """An unknown model name is named, with timm's close names."""
    assert main(["train", "--run-dir", str(tmp_path), "--set", *DIGITS, "model=vit_nope_patch4"]) == 2
    assert "unknown model 'vit_nope_patch4'" in _one_line_error(capfd)


def test_train_names_missing_weights_file(tmp_path, capfd):
    """A weights file that does not exist is named."""
    weights = tmp_path / "missing.safetensors"
    settings = [*DIGITS[:-1], f'model_kwargs={{"depth": 1, "weights": "{weights}"}}']
    assert main(["train", "--run-dir", str(tmp_path / "run"), "--set", *settings]) == 2
    assert f"weights file '{weights}' does not exist" in _one_line_error(capfd)


def test_train_rejects_unknown_setting(tmp_path, capfd):
    """`vitstudy train --set` with an unknown key exits 2 and lists the settings."""
    assert main(["train", "--run-dir", str(tmp_path), "--set", "learning_rate=0.1"]) == 2
    assert "'learning_rate' is not a setting" in _one_line_error(capfd)


def test_train_rejects_value_of_wrong_type(tmp_path, capfd):
    """`--set epochs=ten` names the setting and the type it needs."""
    assert main(["train", "--run-dir", str(tmp_path), "--set", "epochs=ten"]) == 2
    assert "--set epochs=ten is not allowed: expected int" in _one_line_error(capfd)


def test_train_rejects_bad_value(tmp_path, capfd):
    """`vitstudy train --set epochs=0` exits 2 naming the value and the allowed range."""
    assert main(["train", "--run-dir", str(tmp_path), "--set", "epochs=0"]) == 2
    assert "epochs=0 is not allowed" in _one_line_error(capfd)


@pytest.mark.parametrize("command", ["train", "report"])
def test_unknown_scale_is_named(command, tmp_path, capfd):
    """`--scale nope` names the value and the scales there are."""
    assert main([command, "--scale", "nope", "--run-dir" if command == "train" else "--out", str(tmp_path)]) == 2
    assert "scale='nope' is not allowed: expected one of smoke, quick" in _one_line_error(capfd)


def test_paper_scale_without_imagenet_says_what_to_set(tmp_path, capfd, monkeypatch):
    """`report --scale paper` without VITSTUDY_IMAGENET says to set it, before running any notebook."""
    monkeypatch.delenv("VITSTUDY_IMAGENET", raising=False)
    assert main(["report", "--scale", "paper", "--out", str(tmp_path)]) == 2
    assert "VITSTUDY_IMAGENET=" in _one_line_error(capfd)


def test_paper_scale_with_missing_imagenet_names_the_folder(tmp_path, capfd, monkeypatch):
    """`report --scale paper` with VITSTUDY_IMAGENET pointing nowhere names that folder."""
    monkeypatch.setenv("VITSTUDY_IMAGENET", str(tmp_path / "imagenet"))
    assert main(["report", "--scale", "paper", "--out", str(tmp_path / "out")]) == 2
    assert f"data_root '{tmp_path / 'imagenet'}' does not exist" in _one_line_error(capfd)


def test_overrides_are_typed():
    """--set values are JSON checked against the field: floats from ints, raw text for text fields, null for None."""
    parsed = parse_overrides(["lr=1", "model=123", "train_size=null", "augment=false"], TrainConfig)
    assert parsed == {"lr": 1.0, "model": "123", "train_size": None, "augment": False}
    assert isinstance(parsed["lr"], float)


def test_unknown_command_is_refused(capsys):
    """An unknown command exits 2 with the usage."""
    assert main(["fly"]) == 2
    assert "unknown command 'fly'" in capsys.readouterr().err


def test_corrupt_image_in_a_loader_worker_is_one_line(tmp_path, image_tree):
    """A corrupt image read in a DataLoader worker process ends `python -m vitstudy train` with one line naming it."""
    image_tree(tmp_path / "images", corrupt=True)
    settings = [
        "dataset=imagefolder",
        f"data_root={tmp_path / 'images'}",
        "model=deit_tiny_patch16_224",
        'model_kwargs={"depth": 1}',
        "train_size=null",
        "val_size=0",
        "epochs=1",
        "batch_size=2",
        "num_workers=1",
    ]
    command = [sys.executable, "-m", "vitstudy", "train", "--quiet", "--run-dir", str(tmp_path / "run")]
    completed = subprocess.run(
        [*command, "--set", *settings], capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1")
    )
    assert completed.returncode == 2, completed.stderr
    assert completed.stderr.count("\n") == 1 and "Traceback" not in completed.stderr, completed.stderr
    assert "cannot read image" in completed.stderr and "cat/0.png" in completed.stderr


@pytest.mark.parametrize("name", MEASUREMENTS)
def test_measure_runs_the_named_experiment(name, monkeypatch):
    """`vitstudy measure NAME` calls vitstudy.measure.NAME.measure() and exits 0."""
    calls = []
    fake = types.ModuleType(f"vitstudy.measure.{MEASUREMENTS[name]}")  # "compile" is compile_speed, ...
    fake.measure = lambda: calls.append(name)
    monkeypatch.setitem(sys.modules, fake.__name__, fake)
    assert main(["measure", name]) == 0
    assert calls == [name]


def test_unknown_measurement_is_named(capfd):
    """`vitstudy measure nope` exits 2 naming the value and the measurements there are, in one line."""
    assert main(["measure", "nope"]) == 2
    err = _one_line_error(capfd)
    assert "measure='nope' is not allowed: expected one of ('isolation', 'loader_speed', 'widget_latency'," in err


@pytest.mark.parametrize("argv", [["--help"], ["measure", "nope"], ["nonsense"]])
def test_help_and_mistakes_load_no_torch(argv):
    """`--help` and a user's mistake answer without importing torch (the CLI imports what a command runs)."""
    code = f"import sys; from vitstudy.__main__ import main; main({argv!r}); print('torch' in sys.modules)"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert completed.stdout.strip().splitlines()[-1] == "False", completed.stdout + completed.stderr
