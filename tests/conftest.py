"""Shared fixtures: every test writes into temporary folders, never into the project's figures or caches."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from unittest import mock

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
# Under `pytest -n auto` there is one worker per core, each with a multi-threaded torch (and the notebook kernels,
# JupyterLab servers and subprocesses they start): together they oversubscribe the cores, and OpenMP's thread team
# then collapses (measured: a 2-thread training step ran ~8x slower while one other process was busy; one thread did
# not slow down). One thread per worker process keeps every test's speed steady and fills the cores with workers,
# whatever their count; a single process (no xdist, or one core) keeps torch's default. OMP_NUM_THREADS overrides.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ.setdefault("OMP_NUM_THREADS", "1")

# torch reads OMP_NUM_THREADS when it is first imported: after the lines above.
import torch  # noqa: E402

from vitstudy.config import Scale, TrainConfig  # noqa: E402
from vitstudy.data import build_splits  # noqa: E402
from vitstudy.experiments.multiexit.study import build_study  # noqa: E402
from vitstudy.models import create_model  # noqa: E402
from vitstudy.multiexit import MultiExitViT  # noqa: E402

LONG_RUNNING = ("notebooks", "slow", "browser")  # markers of the tests that take tens of seconds or minutes
LONG_SECONDS = 30.0  # the cost assumed of a long-running test whose marker gives no ``seconds=``


def cost_hint(item: pytest.Item) -> float:
    """The seconds a long-running test is known to take: the largest ``seconds=`` of its long-running markers
    (``@pytest.mark.slow(seconds=40)``), :data:`LONG_SECONDS` without one; 0 for every other test."""
    markers = [marker for name in LONG_RUNNING for marker in item.iter_markers(name)]
    return max((float(marker.kwargs.get("seconds", LONG_SECONDS)) for marker in markers), default=0.0)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the long tests first, longest first: xdist deals them out to the workers first, so no worker starts a
    long test near the end while the others finish, and the short ones fill the gaps; with ``--dist worksteal``
    (the Makefile's) an idle worker takes queued tests from another, so none idles while another has a queue."""
    items.sort(key=lambda item: -cost_hint(item))  # stable: equal costs keep their collection order


@pytest.fixture(autouse=True)
def isolated_outputs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the cache and the figure output at per-test temporary folders."""
    root = tmp_path_factory.mktemp("vitstudy")
    monkeypatch.setenv("VITSTUDY_CACHE", str(root / "cache"))
    monkeypatch.setenv("VITSTUDY_OUT", str(root / "figures"))
    return root


@pytest.fixture(autouse=True)
def close_figures() -> Iterator[None]:
    """Close every pyplot figure a test left open: a pytest worker runs hundreds of tests in one process, and the
    figures the package's plots build through pyplot would otherwise pile up past matplotlib's warning."""
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


@pytest.fixture
def figures_made(monkeypatch: pytest.MonkeyPatch) -> list:
    """Every matplotlib Figure built while the test runs, pyplot's or not (Figure.__init__ records it): the
    explorers' tests count them to check that a move redraws a kept figure."""
    from matplotlib.figure import Figure

    made: list = []
    build = Figure.__init__

    def recorded(self, *args, **kwargs) -> None:
        made.append(self)
        build(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "__init__", recorded)
    return made


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make CUDA look absent, so the no-device path is tested on GPU machines too."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def bf16_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    """Time bf16 twins whatever the CPU (``VITSTUDY_BF16=1``), so the bf16 columns are tested on an AVX2-only
    machine too, where detection alone would leave them "not measured"."""
    monkeypatch.setenv("VITSTUDY_BF16", "1")


@pytest.fixture
def no_bf16_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the device look without bf16 kernels (``VITSTUDY_BF16=0``), on any machine."""
    monkeypatch.setenv("VITSTUDY_BF16", "0")


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``fcntl`` lock on ``path``: one process at a time (pytest-xdist workers) runs the block."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def made_once(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, Callable[[Path], object]], Path]:
    """``made_once(name, make)``: a folder of this pytest run, filled by ``make(folder)`` the first time any xdist
    worker asks; the other waits on a lock, then gets it as made. A ``make`` that fails leaves nothing behind."""
    base = tmp_path_factory.getbasetemp()
    run_folder = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # workers' folders are inside it

    def get(name: str, make: Callable[[Path], object]) -> Path:
        folder = run_folder / name
        with file_lock(run_folder / f"{name}.lock"):
            if not folder.exists():
                partial = run_folder / f"{name}.partial"
                shutil.rmtree(partial, ignore_errors=True)
                partial.mkdir()
                make(partial)
                partial.rename(folder)
        return folder

    return get


def _train_smoke_baseline(cache: Path) -> None:
    from vitstudy import train

    with mock.patch.dict(os.environ, {"VITSTUDY_CACHE": str(cache)}):
        train.baseline("smoke", progress=False)


@pytest.fixture(scope="session")
def smoke_cache(made_once) -> Path:
    """A cache folder of this pytest run holding the trained smoke baseline (trained once). Tests running at once
    may share its ``baselines/`` (a finished run is only read) and ``multiexit/`` (feature recordings are written
    atomically, with the same content whoever records them first); see :func:`share_cache`."""
    return made_once("smoke-cache", _train_smoke_baseline)


@pytest.fixture
def share_cache(isolated_outputs: Path) -> Callable[[Path, Sequence[str]], None]:
    """``share_cache(folder, names)``: this test's cache links ``folder/<name>`` for each name; the rest of it stays
    the test's own."""

    def link(folder: Path, names: Sequence[str]) -> None:
        cache = isolated_outputs / "cache"
        cache.mkdir(exist_ok=True)
        for name in names:
            (folder / name).mkdir(exist_ok=True)
            (cache / name).symlink_to(folder / name, target_is_directory=True)

    return link


@pytest.fixture(scope="session")
def digits_cfg():
    """A seconds-long training config: a depth-2 ViT on scikit-learn's digits (frozen: one for every test)."""
    from vitstudy.config import TrainConfig

    return TrainConfig(
        model="vitstudy_tiny_patch4_28",
        model_kwargs=dict(depth=2, patch_size=2),
        dataset="digits",
        train_size=512,
        val_size=128,
        epochs=2,
        batch_size=64,
        warmup_epochs=0.5,
        augment=False,
    )


@pytest.fixture
def image_tree():
    """Writes a tiny ImageFolder (train/ and val/, two classes, three 40x40 real PNGs each) under a folder;
    ``corrupt=True`` makes one file undecodable."""

    def write(root: Path, corrupt: bool = False) -> Path:
        import numpy as np
        from PIL import Image

        rng = np.random.default_rng(0)
        for split in ("train", "val"):
            for label in ("cat", "dog"):
                folder = root / split / label
                folder.mkdir(parents=True)
                for i in range(3):
                    Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(folder / f"{i}.png")
        if corrupt:
            (root / "train" / "cat" / "0.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
        return root

    return write


# ----------------------------------------------------------------------------------------------------------
# The multi-exit tests' fixtures (its core's tests and its experiments' tests): a tiny timm ViT, a batch of images,
# small studies. tests/skipvit/conftest.py overrides ``tiny_vit`` and ``images`` there with factories.


@pytest.fixture(scope="module")
def tiny_vit():
    torch.manual_seed(0)
    return create_model("vitstudy_tiny_patch4_28").eval()


@pytest.fixture(scope="module")
def images():
    return torch.randn(12, 1, 28, 28, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def mixed_threshold() -> Callable[[MultiExitViT, torch.Tensor], float]:
    """A threshold between the exit-3 confidences, so some images leave at 3 and the rest go on."""

    def threshold(model: MultiExitViT, x: torch.Tensor) -> float:
        with torch.inference_mode():
            conf = model(x).confidence[:, 0]
        return conf.median().item()

    return threshold


@pytest.fixture(scope="session")
def digits_study(tmp_path_factory):
    """A depth-3 ViT trained on digits, its features recorded, every variant's exit-1 head fitted."""
    from vitstudy.train import train

    cfg = TrainConfig(
        model="vitstudy_tiny_patch4_28",
        model_kwargs=dict(depth=3, patch_size=2),
        dataset="digits",
        train_size=512,
        val_size=128,
        epochs=2,
        batch_size=64,
        warmup_epochs=0.5,
        augment=False,
    )
    result = train(cfg, tmp_path_factory.mktemp("digits"), progress=False)
    scale = Scale("test", cfg, eval_batch_size=128)
    return build_study(scale, result.model, result.splits, exit_sets=[(1,), (1, 2)], head_epochs=50, progress=False)


@pytest.fixture(scope="session")
def depth12_study():
    """An untrained depth-12 ViT on a few digits with exits 3, 6, 9: the speed targets need the report's exits."""
    cfg = TrainConfig(
        model="vitstudy_tiny_patch4_28",
        model_kwargs=dict(img_size=8, patch_size=2),
        dataset="digits",
        train_size=128,
        val_size=64,
        test_size=64,
        augment=False,
    )
    torch.manual_seed(0)
    vit = create_model(cfg.model, **cfg.model_kwargs).eval()
    return build_study(
        Scale("test", cfg, eval_batch_size=64),
        vit,
        build_splits(cfg),
        ["separate"],
        [(3, 6, 9)],
        head_epochs=1,
        progress=False,
    )


@pytest.fixture(scope="session")
def local_ray() -> Iterator[object]:
    """A Ray on this machine with 2 CPUs, started once per pytest process, by the first test that asks (starting one
    takes tens of seconds on a busy machine; every test module that runs Ray tasks shares it); vitstudy.executors
    uses a Ray already started as it is. Skipped where Ray is not installed or cannot start."""
    ray = pytest.importorskip("ray")
    start = dict(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="warning")
    for attempt in range(2):
        try:
            ray.init(**start)
            break
        except Exception as err:  # noqa: BLE001 - Ray's own startup failure is a bare Exception
            # Ray gives its node a fixed 30 s to start its agents (Python processes): on a machine busy with other
            # tests they can take longer, which says nothing about the code under test.
            ray.shutdown()
            if attempt == 1:
                pytest.skip(f"Ray could not start on this busy machine: {err}")
    yield ray
    ray.shutdown()
