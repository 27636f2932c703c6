from vitstudy.__main__ import main


def test_data_command_names_missing_root(tmp_path, capsys):
    """`vitstudy data --root DIR` without the files exits 1 naming the folder."""
    assert main(["data", "--no-install", "--root", str(tmp_path)]) == 1
    assert str(tmp_path) in capsys.readouterr().err


def test_data_command_finds_fashion_mnist(capsys):
    """`vitstudy data` reports where Fashion-MNIST is."""
    assert main(["data", "--no-install"]) == 0
    assert "Fashion-MNIST:" in capsys.readouterr().out


def test_train_rejects_unknown_setting(tmp_path, capsys):
    """`vitstudy train --set` with an unknown key exits 2 and lists the settings."""
    assert main(["train", "--run-dir", str(tmp_path), "--set", "learning_rate=0.1"]) == 2
    assert "'learning_rate' is not a setting" in capsys.readouterr().err


def test_train_rejects_bad_value(tmp_path, capsys):
    """`vitstudy train --set epochs=0` exits 2 naming the value and the allowed range."""
    assert main(["train", "--run-dir", str(tmp_path), "--set", "epochs=0"]) == 2
    assert "epochs=0 is not allowed" in capsys.readouterr().err


def test_unknown_command_is_refused(capsys):
    """An unknown command exits 2 with the usage."""
    assert main(["fly"]) == 2
    assert "unknown command 'fly'" in capsys.readouterr().err
