"""Does the in-memory tensor path (vitstudy.fast_data.TensorLoader) speed up CPU training? (issue 9)

Not a test (a timing is no pass/fail on a shared CPU): run it by hand on a QUIET machine (nothing else running):

    .venv/bin/python tests/fast_loader_cpu.py

Times training steps of the from-scratch study's model (width 64, 2 heads) at batch 128 with augmentation, fed by
the DataLoader path (0 workers, the in-memory default), the DataLoader with one worker process, the tensor path,
and an A/A copy of the DataLoader arm (`fast_data.loader_speed`: the comparison engine, 11 balanced rounds of
>= 2 s per arm). Writes ``figures/tables/08_fast_loader_cpu.{csv,md}`` with the machine and its load average.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    from vitstudy import bench, fast_data
    from vitstudy.config import get_scale
    from vitstudy.report import save_table

    cfg = dataclasses.replace(get_scale("scratch").train, augment=True)
    load = os.getloadavg()[0]
    rows, _ = fast_data.loader_speed(cfg, 128, bench.CompareSettings(rounds=11, min_run_time=2.0))
    rows = rows.assign(model=f"{cfg.model} (width 64, 2 heads: the scratch recipe)",
                       machine=f"2-core VM, load average {load:.2f} at the start")  # fmt: skip
    save_table(rows, "08_fast_loader_cpu", out=ROOT / "figures")
    print(rows[["arm", "images_per_s", "speedup", "speedup_low", "speedup_high", "note"]].to_string())


if __name__ == "__main__":
    sys.exit(main())
