"""gunicorn.conf.py's worker set-up, called as gunicorn calls it."""

from __future__ import annotations

import gc
import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_worker_freezes_what_it_loaded_at_boot_and_collects_garbage_less_often():
    settings = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    before = gc.get_threshold()
    try:
        settings["tune_gc"]()
        assert gc.get_freeze_count() > 0  # the boot objects are out of the collector's reach
        assert gc.get_threshold() == settings["GC_THRESHOLDS"]
        assert settings["GC_THRESHOLDS"][0] > before[0]
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
