"""The bench tests' fake clock: the engine's rounds, ratios and stopping rule checked on fake seconds, never on the
machine's (a shared CPU's times are no pass/fail)."""

from __future__ import annotations

import gc
import math
import types
from collections.abc import Callable

import numpy as np
import pytest

from vitstudy.bench import comparison as engine


class FakeClock:
    """A clock that only moves when an arm runs: each call costs ``cost × exp(noise · z)`` fake seconds
    (log-normal, so the median cost is exactly ``cost``)."""

    def __init__(self, seed: int = 0, noise: float = 0.1) -> None:
        self.now = 0.0
        self.rng = np.random.default_rng(seed)
        self.noise = noise

    def __call__(self) -> float:
        return self.now

    def arm(self, cost: float) -> Callable[[], None]:
        def run() -> None:
            self.now += cost * math.exp(self.noise * self.rng.standard_normal())

        return run


@pytest.fixture
def fake_clock() -> type[FakeClock]:
    """``fake_clock(seed=0, noise=0.1)``: a new :class:`FakeClock`."""
    return FakeClock


@pytest.fixture
def no_collections(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine without its garbage collections, for tests on a fake clock: there each collection only costs a
    real scan of this whole process per comparison (tests/bench/test_compare.py checks the collections)."""
    monkeypatch.setattr(engine, "gc", types.SimpleNamespace(collect=lambda: 0, freeze=gc.freeze, unfreeze=gc.unfreeze))
