"""PNG figures (matplotlib, Agg backend: no display needed).

``plot_loss_curve`` is shared by diagnose_training.py (``--plot``) and train_lora.py
(``loss_curve.png`` in the adapter dir).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

from .errors import require

_SEVERITY_COLORS = {"error": "#d62728", "warning": "#ff7f0e", "info": "#2ca02c"}


def _pyplot():
    mpl = require("matplotlib", "to draw plots")
    mpl.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _smooth(values: Sequence[float], k: int) -> list[float]:
    """Centered rolling mean over finite neighbours (no lag, unlike an EMA); NaN stays NaN."""
    h = k // 2
    out = []
    for i, v in enumerate(values):
        if not _finite(v):
            out.append(float("nan"))
            continue
        win = [x for x in values[max(0, i - h): i + h + 1] if _finite(x)]
        out.append(sum(win) / len(win))
    return out


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def plot_loss_curve(log_rows: Sequence[dict], out_png: str | os.PathLike, best_step: int | None = None,
                    findings: Sequence[dict] | None = None, title: str | None = None) -> Path:
    """Draw training/eval loss (and lr, grad norm when logged) to ``out_png``; return its path.

    ``log_rows``: dicts in the training_log.jsonl shape (step, loss, eval_loss, lr,
    grad_norm, ...). ``best_step`` gets a dashed vertical line; each finding
    (``{"code", "severity", "step"}``) a coloured marker line with its code. Non-finite
    losses are drawn as red crosses at the top edge. The file is written atomically
    (the caller decides about overwriting).
    """
    plt = _pyplot()
    from .jsonl import atomic_open

    rows = sorted((r for r in log_rows if r.get("step") is not None), key=lambda r: r["step"])
    all_steps = [r["step"] for r in rows] or [0]
    x0, x1 = min(all_steps), max(all_steps)

    def _ha(step):  # labels near the right edge go to the left of their line
        return ("right", -3) if x1 > x0 and (step - x0) / (x1 - x0) > 0.8 else ("left", 3)
    tr = [(r["step"], r["loss"]) for r in rows if r.get("loss") is not None]
    ev = [(r["step"], r["eval_loss"]) for r in rows if r.get("eval_loss") is not None]
    lr = [(r["step"], r["lr"]) for r in rows if _finite(r.get("lr"))]
    gn = [(r["step"], r["grad_norm"]) for r in rows if _finite(r.get("grad_norm"))]
    lower = bool(lr or gn)
    fig, axes = plt.subplots(2 if lower else 1, 1, figsize=(8, 5.5 if lower else 4.2), sharex=True,
                             gridspec_kw={"height_ratios": [3, 1]} if lower else None)
    ax = axes[0] if lower else axes
    finite_vals = [v for _, v in tr + ev if _finite(v)]
    if tr:
        xs, ys = zip(*tr)
        ys_f = [v if _finite(v) else float("nan") for v in ys]
        ax.plot(xs, ys_f, color="#1f77b4", alpha=0.3, lw=0.8, label="train loss")
        if len(tr) >= 10:
            ax.plot(xs, _smooth(ys_f, max(3, (len(tr) // 20) | 1)), color="#1f77b4", lw=1.8,
                    label="train loss (smoothed)")
    if ev:
        xs, ys = zip(*ev)
        ax.plot(xs, [v if _finite(v) else float("nan") for v in ys], "o-", color="#9467bd", ms=4, lw=1.4,
                label="eval loss")
    if finite_vals:
        lo, hi = min(finite_vals), max(finite_vals)
        spread = hi - lo or max(abs(hi), 1.0) * 0.1
        top = hi + 0.08 * spread
        if lo > 0 and hi / lo > 20:  # an explosion would flatten everything else
            ax.set_yscale("log")
            top = hi * 1.5
            ax.set_ylim(lo / 1.5, top)
        else:
            ax.set_ylim(max(0.0, lo - 0.08 * spread) if lo >= 0 else lo - 0.08 * spread, top)
        bad = [s for s, v in tr + ev if not _finite(v)]
        if bad:
            ax.plot(bad, [top] * len(bad), "x", color="#d62728", ms=8, mew=2, label="NaN/inf", clip_on=False)
    if best_step is not None:
        for a in (axes if lower else [ax]):
            a.axvline(best_step, color="#2ca02c", ls="--", lw=1.2)
        ha, dx = _ha(best_step)
        ax.annotate(f"best step {best_step}", xy=(best_step, 1.0), xycoords=("data", "axes fraction"),
                    xytext=(dx, -12), textcoords="offset points", color="#2ca02c", fontsize=8, ha=ha)
    codes = []
    for i, f in enumerate(findings or []):
        if f.get("code") == "healthy":
            codes.append("healthy")
            continue
        codes.append(f.get("code", "?"))
        if f.get("step") is None:
            continue
        c = _SEVERITY_COLORS.get(f.get("severity", "warning"), "#ff7f0e")
        ax.axvline(f["step"], color=c, ls=":", lw=1.5)
        ha, dx = _ha(f["step"])
        ax.annotate(f.get("code", ""), xy=(f["step"], 1.0), xycoords=("data", "axes fraction"),
                    xytext=(dx, -24 - 11 * i), textcoords="offset points", color=c, fontsize=8,
                    fontweight="bold", ha=ha)
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    if tr or ev:
        ax.legend(loc="best", fontsize=8)
    ax.set_title(title or ("loss curve" + (f" — {', '.join(dict.fromkeys(codes))}" if codes else "")),
                 fontsize=10)
    if lower:
        ax2 = axes[1]
        if lr:
            xs, ys = zip(*lr)
            ax2.plot(xs, ys, color="#8c564b", lw=1.2, label="learning rate")
            ax2.set_ylim(0, max(ys) * 1.15 or 1.0)
            ax2.set_ylabel("lr", color="#8c564b", fontsize=8)
            ax2.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
        if gn:
            ax3 = ax2.twinx() if lr else ax2
            xs, ys = zip(*gn)
            ax3.plot(xs, ys, color="#7f7f7f", lw=0.9, alpha=0.8, label="grad norm")
            ax3.set_ylabel("grad norm", color="#7f7f7f", fontsize=8)
        ax2.grid(alpha=0.3)
        ax2.set_xlabel("step")
    else:
        ax.set_xlabel("step")
    fig.tight_layout()
    out = Path(out_png)
    with atomic_open(out, "wb", force=True, encoding=None) as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)
    return out
