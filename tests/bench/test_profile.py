"""A profile writes nothing to stderr: the profiler's native start/stop lines and its no-GPU error stay off the
report's console."""

import os
import subprocess
import sys

from vitstudy.bench.profile import KINETO_LOG_LEVEL

PROFILE = """
import torch
from vitstudy.bench.profile import operator_times
times = operator_times(lambda: torch.ones(32, 32) @ torch.ones(32, 32), calls=2)
print(times["operator"].tolist())
"""


def test_a_profile_in_a_fresh_process_writes_nothing_to_stderr():
    """In a new process (the profiler's native library logs once it starts), a profile prints its table and no
    ``profiler_start`` / ``profiler_stop`` or ``gpuGetDeviceCount failed`` line."""
    environment = {key: value for key, value in os.environ.items() if key != KINETO_LOG_LEVEL}
    completed = subprocess.run(
        [sys.executable, "-c", PROFILE], capture_output=True, text=True, env=environment, timeout=300, check=True
    )
    assert "aten::mm" in completed.stdout
    assert completed.stderr == ""
