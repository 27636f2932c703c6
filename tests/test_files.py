import contextlib
import hashlib
import json
import os

import pytest

from vitstudy.files import atomic_path, atomic_write_text, fingerprint


@contextlib.contextmanager
def _umask(mask):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_write_gets_the_umask_default_mode(tmp_path, mask, mode):
    """An atomically written file has the mode a plain open() would give it under the umask."""
    with _umask(mask):
        atomic_write_text(tmp_path / "out.txt", "text")
    assert (tmp_path / "out.txt").stat().st_mode & 0o777 == mode


def test_atomic_path_replaces_with_the_default_mode(tmp_path):
    """Replacing a file writes the new one with the umask's default mode, not the temporary file's."""
    target = tmp_path / "table.csv"
    target.write_text("old")
    target.chmod(0o600)
    with _umask(0o022), atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new" and target.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]


@pytest.mark.parametrize(
    ("value", "length", "algorithm"),
    [
        ({"b": 1, "a": [2, 3]}, 10, "sha256"),
        (["row", {"w": 0}], 8, "sha256"),
        ([{"x": None}, "fp32", "1.0"], 10, "sha1"),
    ],
)
def test_fingerprint_is_the_hash_the_cache_folders_were_named_with(value, length, algorithm):
    """files.fingerprint equals the formula every cache key used before it existed (json with sorted keys, hashed,
    cut), so the cache folders and the committed tables that name them are still found."""
    old = hashlib.new(algorithm, json.dumps(value, sort_keys=True).encode()).hexdigest()[:length]
    assert fingerprint(value, length=length, algorithm=algorithm) == old
