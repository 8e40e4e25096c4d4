"""Console-command entry points (``ft-validate`` ...) declared in pyproject.toml.

Each one runs the matching ``scripts/<verb>.py`` so that the console command and
``python3 scripts/<verb>.py`` behave identically (same parser, same output).
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

SCRIPTS_DIR = Path(__file__).resolve().parent.parent


def _run(verb: str) -> None:
    script = SCRIPTS_DIR / f"{verb}.py"
    if not script.is_file():
        print(f"error: {script} not found; reinstall with `pip install -e <skill dir>`", file=sys.stderr)
        raise SystemExit(2)
    sys.argv[0] = str(script)
    runpy.run_path(str(script), run_name="__main__")


def validate_jsonl() -> None: _run("validate_jsonl")
def prepare_data() -> None: _run("prepare_data")
def scan_pii() -> None: _run("scan_pii")
def audit_log() -> None: _run("audit_log")
def should_finetune() -> None: _run("should_finetune")
def estimate_costs() -> None: _run("estimate_costs")
def train_lora() -> None: _run("train_lora")
def evaluate() -> None: _run("evaluate")
def diagnose_training() -> None: _run("diagnose_training")
def export_adapter() -> None: _run("export_adapter")
def collect_failures() -> None: _run("collect_failures")
def augment_data() -> None: _run("augment_data")
def near_dedup_cluster() -> None: _run("near_dedup_cluster")
