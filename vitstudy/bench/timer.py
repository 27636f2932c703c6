"""``torch.utils.benchmark.Timer``, imported without the CUDA-toolkit line its import logs on a machine without a GPU.

``torch.utils.benchmark`` imports ``torch.utils.cpp_extension``, which logs "No CUDA runtime is found, using
CUDA_HOME=…" in every process where a CUDA toolkit is installed but no GPU answers: a warning a newcomer would read as
an error, once per timing worker. Only that logger is quietened, only while the import runs, so a later C++-extension
build in the same process still reports what it finds.
"""

from __future__ import annotations

import logging


def _import_timer() -> type:
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        from torch.utils.benchmark import Timer
    finally:
        logger.setLevel(level)
    return Timer


Timer = _import_timer()
