#!/usr/bin/env python3
"""Regenerate the loss-curve pictures in docs/img/ used by evaluation.md.

Each figure is a synthetic training log (finetune_kit.diagnose.synthetic_log) run through the same
analysis and plot as `diagnose_training.py --plot`, so the pictures show exactly what the tool draws.

    python3 docs/make_figures.py            # writes docs/img/curve_<code>.png
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from finetune_kit import diagnose, plots  # noqa: E402

TITLES = {
    "healthy": "healthy: train and eval fall together, gap small",
    "overfitting": "overfitting: eval loss turns up while train keeps falling",
    "divergence": "divergence: loss explodes (lr 3e-3, no clipping)",
    "zero_loss": "zero_loss: loss hits 0 within a few steps (masked labels / duplicates)",
    "underfitting": "underfitting: flat, high loss (lr 1e-6)",
    "lr_too_high": "lr_too_high: spikes and bouncing around a high level",
}


def main(out_dir: Path = ROOT / "docs" / "img") -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for code in diagnose.CODES:
        rows = diagnose.synthetic_log(code, seed=0)
        res = diagnose.analyse(rows)
        written.append(plots.plot_loss_curve(rows, out_dir / f"curve_{code}.png", best_step=res["best_step"],
                                             findings=res["findings"], title=TITLES[code]))
    return written


if __name__ == "__main__":
    for p in main():
        print(p)
