"""Read a training log and say what the loss curve means (used by ``scripts/diagnose_training.py``).

Inputs (auto-detected): our ``training_log.jsonl`` (one row per logging step:
step, epoch, loss, eval_loss, lr, grad_norm, tokens_per_s), a Hugging Face
``trainer_state.json`` (its ``log_history``), an OpenAI-style fine-tuning results CSV
(step, train_loss, valid_loss, full_valid_loss, train_accuracy, ...), or a directory
holding one of them (an adapter/output dir, or a checkpoint dir).

Finding codes (stable; thresholds below are the documented defaults, evaluation.md):
- ``divergence`` (error): NaN/inf in loss, eval loss or grad norm; or the smoothed training
  loss ends > 2x its minimum and above where it started. Grad-norm spikes (> 10x the median)
  without a loss blow-up are reported as a ``divergence`` warning.
- ``zero_loss`` (error): a training loss of exactly 0, or < 0.01 within the first 20 % of
  the logged steps, or < 0.01 while the eval loss is < 0.01 too (leaked validation data); the
  message names the likely cause from the curve: ~0 from the start (labels all masked) or fallen
  from a real loss (duplicated/trivial/leaked data); (warning) when only the training loss goes
  below 0.01 later (memorisation).
- ``overfitting`` (warning): eval loss (its last value and the mean of the last <= 3 points
  after the minimum) rose >= 5 % above its minimum while the training loss
  kept falling (>= 5 %); evidence includes the eval/train ratio and its band
  (< 1.2 fine, 1.2-2 widening gap, > 2 memorising).
- ``lr_too_high`` (warning): >= 2 spikes where the loss is > 2x the median of the preceding
  points and stays > 1.5x for 2 of 3 steps (one noisy batch is not a spike), or, in the
  second half, a median relative deviation from the local median > 15 % while the loss fell
  < 25 % overall (bouncing without progress).
- ``underfitting`` (warning): the smoothed loss fell < 10 % from the first to the last tenth
  of the run and is still >= 0.5 (flat and high).
- ``healthy`` (info): none of the above.

``best_step``: the step with the lowest eval loss (before the divergence onset when there is one);
without eval loss, the last logged step (before the onset). ``None``, with the reason, when a blocking
``zero_loss`` makes every checkpoint suspect, or when several steps tie for the lowest eval loss (a tie is
not broken by taking the first).
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from . import jsonl
from .errors import UsageError

CODES = ("overfitting", "divergence", "zero_loss", "underfitting", "lr_too_high", "healthy")
BLOCKING = {"error"}
KEYS = ("step", "epoch", "loss", "eval_loss", "lr", "grad_norm", "tokens_per_s")

# thresholds (documented in evaluation.md)
ZERO_LOSS = 0.01
EARLY_FRACTION = 0.2
OVERFIT_RISE = 0.05
OVERFIT_TRAIN_FALL = 0.05
DIVERGE_FACTOR = 2.0
GRAD_SPIKE_FACTOR = 10.0
SPIKE_FACTOR = 2.0
OSC_NOISE = 0.15
OSC_MAX_DROP = 0.25
UNDERFIT_DROP = 0.10
UNDERFIT_LEVEL = 0.5


@dataclass
class CurveFinding:
    code: str
    severity: str          # "error" | "warning" | "info"
    step: int | None
    message: str
    fix: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------- reading logs

def _num(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        s = v.strip()
        if not s:
            return None
        try:
            return float(s)  # accepts nan / inf
        except ValueError:
            return None
    return None


def _row(step: Any, **kw) -> dict[str, Any]:
    s = _num(step)
    if s is None or not math.isfinite(s):
        raise ValueError(f"step {step!r} is not a number")
    r = {k: None for k in KEYS}
    r["step"] = int(s)
    for k, v in kw.items():
        if k in r:
            r[k] = _num(v)
    return r


def _merge(rows: Iterable[dict]) -> list[dict]:
    """Merge rows by step (train and eval entries of one step become one row)."""
    by: dict[int, dict] = {}
    for r in rows:
        cur = by.setdefault(r["step"], {k: None for k in KEYS} | {"step": r["step"]})
        for k in KEYS[1:]:
            if r.get(k) is not None:
                cur[k] = r[k]
    return [by[s] for s in sorted(by)]


def _from_log_history(hist: Any, src: str) -> list[dict]:
    if not isinstance(hist, list):
        raise UsageError(f"{src}: 'log_history' is not a list")
    rows = []
    for i, e in enumerate(hist):
        if not isinstance(e, dict) or "step" not in e:
            continue
        if "train_runtime" in e:  # the end-of-training summary (its train_loss is an average)
            continue
        try:
            rows.append(_row(e["step"], epoch=e.get("epoch"), loss=e.get("loss"),
                             eval_loss=e.get("eval_loss"), lr=e.get("learning_rate"),
                             grad_norm=e.get("grad_norm"),
                             tokens_per_s=e.get("train_tokens_per_second")))
        except ValueError as exc:
            raise UsageError(f"{src}: log_history[{i}]: {exc}") from exc
    return _merge(rows)


def _from_jsonl(path: Path) -> list[dict]:
    rows = []
    for ln, obj in jsonl.read_jsonl_objects(path):
        if not isinstance(obj, dict) or "step" not in obj:
            raise UsageError(f"{path}:{ln}: expected an object with 'step' (training_log.jsonl format)")
        try:
            rows.append(_row(obj["step"], epoch=obj.get("epoch"), loss=obj.get("loss", obj.get("train_loss")),
                             eval_loss=obj.get("eval_loss", obj.get("valid_loss")),
                             lr=obj.get("lr", obj.get("learning_rate")), grad_norm=obj.get("grad_norm"),
                             tokens_per_s=obj.get("tokens_per_s")))
        except ValueError as exc:
            raise UsageError(f"{path}:{ln}: {exc}") from exc
    return _merge(rows)


def _from_csv(path: Path) -> list[dict]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            cols = [c.strip() for c in (reader.fieldnames or [])]
            if "step" not in cols or not ({"train_loss", "loss"} & set(cols)):
                raise UsageError(f"{path}: not a results CSV (needs columns step and train_loss; "
                                 f"found {', '.join(cols[:8]) or 'none'})")
            rows = []
            for i, rec in enumerate(reader, start=2):
                rec = {(k or "").strip(): v for k, v in rec.items()}
                ev = _num(rec.get("full_valid_loss"))
                if ev is None:
                    ev = _num(rec.get("valid_loss"))
                try:
                    rows.append(_row(rec.get("step"), epoch=rec.get("epoch"),
                                     loss=rec.get("train_loss", rec.get("loss")), eval_loss=ev,
                                     lr=rec.get("learning_rate", rec.get("lr")),
                                     grad_norm=rec.get("grad_norm")))
                except ValueError as exc:
                    raise UsageError(f"{path}:{i}: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not UTF-8 text ({exc.reason})") from exc
    except csv.Error as exc:
        raise UsageError(f"{path}: unreadable CSV ({exc})") from exc
    return _merge(rows)


def find_log(path: str | os.PathLike) -> Path:
    """The log file for ``path`` (a file, or a run/adapter/checkpoint directory)."""
    p = Path(path)
    if not p.exists():
        raise UsageError(f"input not found: {p}")
    if not p.is_dir():
        return jsonl.check_readable(p)  # a FIFO/device is refused here, never read
    for name in ("training_log.jsonl", "trainer_state.json"):
        if (p / name).is_file():
            return p / name
    ckpts = sorted(p.glob("checkpoint-*/trainer_state.json"),
                   key=lambda q: int(q.parent.name.split("-")[-1]) if q.parent.name.split("-")[-1].isdigit() else -1)
    if ckpts:
        return ckpts[-1]
    raise UsageError(f"{p} holds no training_log.jsonl, trainer_state.json or checkpoint-*/trainer_state.json")


def read_log(path: str | os.PathLike) -> tuple[list[dict], str]:
    """Rows in the training_log.jsonl shape, and the detected format name."""
    p = find_log(path)
    jsonl.check_readable(p)
    head = p.read_bytes()[:4096].lstrip()
    if p.suffix.lower() == ".csv":
        rows, fmt = _from_csv(p), "openai_csv"
    elif p.suffix.lower() == ".jsonl":
        rows, fmt = _from_jsonl(p), "training_log_jsonl"
    elif head.startswith(b"{") or head.startswith(b"["):
        try:
            obj = json.loads(p.read_text(encoding="utf-8"))
        except RecursionError:
            raise UsageError(f"{p} is nested too deeply to be a training log") from None
        except (ValueError, UnicodeDecodeError):
            # not one JSON document: maybe JSONL with another suffix
            rows, fmt = _from_jsonl(p), "training_log_jsonl"
        else:
            if isinstance(obj, dict) and "log_history" in obj:
                rows, fmt = _from_log_history(obj["log_history"], str(p)), "trainer_state"
            elif isinstance(obj, list):
                rows, fmt = _from_log_history(obj, str(p)), "log_history"
            elif isinstance(obj, dict) and "step" in obj:
                rows, fmt = _from_jsonl(p), "training_log_jsonl"
            else:
                raise UsageError(f"{p}: JSON without 'log_history' (expected a trainer_state.json)")
    elif b"step" in head.split(b"\n", 1)[0]:
        rows, fmt = _from_csv(p), "openai_csv"
    else:
        raise UsageError(f"{p}: unrecognised log format (give training_log.jsonl, trainer_state.json "
                         f"or an OpenAI results CSV)")
    if not any(r["loss"] is not None or r["eval_loss"] is not None for r in rows):
        raise UsageError(f"{p}: no loss values found")
    return rows, fmt


# ---------------------------------------------------------------- analysis helpers

def _series(rows: Sequence[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
    if not pts:
        return np.zeros(0, dtype=int), np.zeros(0)
    a = np.asarray(pts, dtype=float)
    return a[:, 0].astype(int), a[:, 1]


def rolling_median(y: np.ndarray, k: int) -> np.ndarray:
    """Centered rolling median (window shrinks at the edges)."""
    n = len(y)
    h = k // 2
    return np.array([np.median(y[max(0, i - h): min(n, i + h + 1)]) for i in range(n)])


def _window(n: int) -> int:
    return max(1, n // 10)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"


# ---------------------------------------------------------------- detectors

@dataclass
class Curve:
    """The series every detector reads, computed once from the log rows."""

    steps: np.ndarray       # steps with a training loss (finite or not)
    loss: np.ndarray
    esteps: np.ndarray      # steps with an eval loss (finite or not)
    eloss: np.ndarray
    gsteps: np.ndarray
    gnorm: np.ndarray
    lrs: np.ndarray
    fsteps: np.ndarray      # finite training losses only
    floss: np.ndarray
    es: np.ndarray          # finite eval losses only
    ev: np.ndarray
    smooth: np.ndarray      # rolling median of floss
    window: int             # points in the start/end windows (a tenth of the logged points)
    start_median: float | None   # median training loss over the first window
    end_median: float | None     # median training loss over the last window
    drop: float | None           # relative fall of the training loss (see loss_drop)

    @property
    def n(self) -> int:
        return len(self.floss)

    @property
    def max_lr(self) -> float | None:
        return float(np.nanmax(self.lrs)) if len(self.lrs) else None

    @classmethod
    def from_rows(cls, rows: Sequence[dict]) -> "Curve":
        steps, loss = _series(rows, "loss")
        esteps, eloss = _series(rows, "eval_loss")
        gsteps, gnorm = _series(rows, "grad_norm")
        _lsteps, lrs = _series(rows, "lr")
        fin = np.isfinite(loss)
        fsteps, floss = steps[fin], loss[fin]
        n = len(floss)
        efin = np.isfinite(eloss)
        smooth = rolling_median(floss, max(3, (n // 20) | 1)) if n else floss
        w = _window(n) if n else 0
        start = float(np.median(floss[:w])) if n else None
        end = float(np.median(floss[-w:])) if n else None
        return cls(steps, loss, esteps, eloss, gsteps, gnorm, lrs, fsteps, floss, esteps[efin], eloss[efin],
                   smooth, w, start, end, _loss_drop(floss, start, end))


def _loss_drop(floss: np.ndarray, start: float | None, end: float | None) -> float | None:
    """Relative fall of the training loss: start-window median vs end-window median; when the start
    median is 0 (the loss collapsed within the first window) the first logged value is the start."""
    if not len(floss) or end is None:
        return None
    base = start if start else float(floss[0])
    return (base - end) / base if base > 0 else None


def _non_finite(c: Curve) -> CurveFinding | None:
    """divergence (error): the first NaN/inf in loss, eval loss or grad norm."""
    bad = []
    for prio, (name, st, ys) in enumerate((("loss", c.steps, c.loss), ("eval_loss", c.esteps, c.eloss),
                                           ("grad_norm", c.gsteps, c.gnorm))):
        nf = np.where(~np.isfinite(ys))[0]
        if len(nf):
            bad.append((int(st[nf[0]]), prio, name, float(ys[nf[0]])))
    if not bad:
        return None
    s, _prio, name, v = min(bad)
    return CurveFinding(
        "divergence", "error", s, f"{name} became {v} at step {s}: training diverged",
        "restart from the last good checkpoint with a 2-10x lower learning rate, warmup "
        "(warmup_ratio 0.03-0.1) and gradient clipping (max_grad_norm 1.0); in fp16 switch to bf16 "
        "or fp32; check the data for empty or extremely long examples",
        {"first_non_finite": {"step": s, "series": name, "value": str(v)}})


def _loss_explosion(c: Curve) -> CurveFinding | None:
    """divergence (error): the smoothed loss ends > DIVERGE_FACTOR x its minimum and above the start."""
    if c.n < 5:
        return None
    imin = int(np.argmin(c.smooth))
    mn = float(c.smooth[imin])
    if not (mn > 0 and c.end_median > DIVERGE_FACTOR * mn and c.end_median > c.start_median):
        return None
    after = np.where(c.smooth[imin:] > 1.5 * mn)[0]
    blow = int(c.fsteps[imin + after[0]]) if len(after) else int(c.fsteps[-1])
    return CurveFinding(
        "divergence", "error", blow,
        f"training loss exploded: smoothed loss {_fmt(mn)} at step {int(c.fsteps[imin])} rose to "
        f"{_fmt(c.end_median)} by the end (> {DIVERGE_FACTOR:g}x its minimum)",
        "keep the checkpoint before the blow-up; restart with a 2-10x lower learning rate, "
        "warmup and max_grad_norm 1.0",
        {"min_smoothed_loss": mn, "min_step": int(c.fsteps[imin]), "end_median_loss": c.end_median,
         "start_median_loss": c.start_median})


def _grad_spikes(c: Curve) -> CurveFinding | None:
    """divergence (warning): grad-norm spikes > GRAD_SPIKE_FACTOR x the median without a loss blow-up."""
    gfin = c.gnorm[np.isfinite(c.gnorm)] if len(c.gnorm) else c.gnorm
    if len(gfin) < 5:
        return None
    med = float(np.median(gfin))
    spikes = [(int(s), float(g)) for s, g in zip(c.gsteps, c.gnorm)
              if math.isfinite(g) and med > 0 and g > GRAD_SPIKE_FACTOR * med]
    if not spikes:
        return None
    return CurveFinding(
        "divergence", "warning", spikes[0][0],
        f"{len(spikes)} gradient-norm spike(s) over {GRAD_SPIKE_FACTOR:g}x the median "
        f"({_fmt(med)}), first at step {spikes[0][0]} (grad_norm {_fmt(spikes[0][1])}): an early "
        f"sign of divergence",
        "set max_grad_norm 1.0 (gradient clipping), lower the learning rate or lengthen warmup; "
        "look for outlier examples in the batches around that step",
        {"median_grad_norm": med, "spikes": spikes[:10]})


def _zero_loss(c: Curve) -> CurveFinding | None:
    """zero_loss: error when exactly 0 or < ZERO_LOSS early, or when the EVAL loss gets there too
    (validation data the model has seen); warning when the training loss gets there late."""
    if not c.n:
        return None
    fsteps, floss = c.fsteps, c.floss
    early_cut = fsteps[0] + EARLY_FRACTION * max(1, fsteps[-1] - fsteps[0])
    exact = np.where(floss == 0.0)[0]
    early = np.where((floss < ZERO_LOSS) & (fsteps <= early_cut))[0]
    late = np.where(floss < ZERO_LOSS)[0]
    eval_zero = np.where(c.ev < ZERO_LOSS)[0]
    fell = float(floss[0]) >= 0.5       # it started high: it learned its way down, labels are not all masked
    if len(exact) or len(early) or (len(late) and len(eval_zero)):
        i = int(early[0]) if len(early) else int(exact[0]) if len(exact) else int(late[0])
        ev_note = (f"; the eval loss is {_fmt(float(c.ev[eval_zero[0]]))} too (step {int(c.es[eval_zero[0]])})"
                   if len(eval_zero) else "")
        if fell:
            cause = ("the loss fell from {first} to ~0{ev}: the model reproduces its training data exactly - "
                     "duplicated or trivial examples" + (", and validation examples that are also in the training "
                                                         "data (leakage)" if len(eval_zero) else "")).format(
                first=_fmt(float(floss[0])), ev=ev_note)
            fix = ("check validation/test against training for overlap (validate_jsonl.py train.jsonl "
                   "validation.jsonl reports leakage; prepare_data.py splits without it), remove duplicates, make "
                   "sure the answers are not given in the prompt; then retrain")
        else:
            cause = f"the loss is ~0 from the start{ev_note}: nothing is being learned"
            fix = ("check the label mask: if every label is -100 (prompt-only masking with a truncated answer, or "
                   "a template without assistant markers) the loss is 0; check for duplicated or trivial examples "
                   "(validate_jsonl.py reports duplicates) and for test/train leakage")
        return CurveFinding(
            "zero_loss", "error", int(fsteps[i]),
            f"training loss {_fmt(float(floss[i]))} at step {int(fsteps[i])}"
            + (f" within the first {int(EARLY_FRACTION * 100)}% of training" if len(early) else "")
            + (f" and exactly 0 from step {int(fsteps[exact[0]])}" if len(exact) else "") + f"; {cause}",
            fix, {"loss": float(floss[i]), "step": int(fsteps[i]), "threshold": ZERO_LOSS,
                  "first_logged_loss": float(floss[0]),
                  "min_eval_loss": float(np.min(c.ev)) if len(c.ev) else None})
    if len(late):
        i = int(late[0])
        return CurveFinding(
            "zero_loss", "warning", int(fsteps[i]),
            f"training loss fell below {ZERO_LOSS} at step {int(fsteps[i])}: the model is memorising "
            f"the training set",
            "use fewer epochs or an earlier checkpoint (best_step when there is one); add data or dropout; "
            "compare eval loss and run evaluate.py before trusting this adapter",
            {"loss": float(floss[i]), "step": int(fsteps[i]), "threshold": ZERO_LOSS})
    return None


def _overfitting(c: Curve) -> CurveFinding | None:
    """overfitting (warning): eval loss rose >= OVERFIT_RISE above its minimum while training loss fell."""
    es, ev, fsteps, floss, w = c.es, c.ev, c.fsteps, c.floss, c.window
    if len(ev) < 3:
        return None
    j = int(np.argmin(ev))
    emin, elast = float(ev[j]), float(ev[-1])
    tail = ev[j + 1:][-3:]  # the (up to 3) last eval points after the minimum: robust to one noisy point
    rise = (float(np.mean(tail)) - emin) / emin if emin > 0 and len(tail) else 0.0
    at, after = fsteps <= es[j], fsteps > es[j]
    train_at = float(np.median(floss[at][-max(1, w):])) if at.any() else None
    train_after = float(np.median(floss[after][-max(1, w):])) if after.any() else None
    train_fell = (train_at is not None and train_after is not None and train_at > 0
                  and (train_at - train_after) / train_at >= OVERFIT_TRAIN_FALL)
    if not (j < len(ev) - 1 and rise >= OVERFIT_RISE and elast >= emin * (1 + OVERFIT_RISE) and train_fell):
        return None
    last = c.end_median
    ratio = elast / last if last else None
    band = None if ratio is None else ("fine" if ratio < 1.2 else "widening gap" if ratio <= 2 else "memorising")
    return CurveFinding(
        "overfitting", "warning", int(es[j]),
        f"eval loss rose {rise * 100:.0f}% (mean of the last eval points) from its minimum {_fmt(emin)} at step "
        f"{int(es[j])} to {_fmt(elast)} while training loss fell from {_fmt(train_at)} to {_fmt(train_after)}"
        + (f"; eval/train ratio {ratio:.2f} ({band})" if ratio else ""),
        f"keep the checkpoint at step {int(es[j])} (best_step); next time train fewer epochs "
        "(stop near that step), or add data, lower the learning rate or LoRA rank, or raise "
        "lora_dropout; use load_best_model_at_end with eval_steps",
        {"min_eval_loss": emin, "min_eval_step": int(es[j]), "final_eval_loss": elast,
         "eval_rise": rise, "train_loss_at_min": train_at, "final_train_loss": train_after,
         "eval_train_ratio": ratio, "ratio_band": band})


def _loss_spikes(floss: np.ndarray, kk: int) -> list[int]:
    """Indices of loss spikes: loss > SPIKE_FACTOR x the median of the kk points BEFORE it (a fast
    initial drop is never a spike; a centered median would call it one) that does not vanish at once
    (the median of it and the next 2 points stays > 1.5x): one noisy batch is not a spike.
    Consecutive spike points count as one event."""
    spikes: list[int] = []
    for i in range(kk, len(floss)):
        pre = float(np.median(floss[i - kk:i]))
        if (floss[i] > ZERO_LOSS and floss[i] > SPIKE_FACTOR * pre
                and float(np.median(floss[i:i + 3])) > 1.5 * pre
                and not (spikes and i - spikes[-1] <= 3)):
            spikes.append(i)
    return spikes


def _lr_too_high(c: Curve) -> CurveFinding | None:
    """lr_too_high (warning): >= 2 loss spikes, or oscillation without progress in the second half."""
    n, floss, fsteps = c.n, c.floss, c.fsteps
    if n < 10:
        return None
    kk = max(5, (n // 10) | 1)
    local = rolling_median(floss, kk)
    with np.errstate(divide="ignore", invalid="ignore"):  # near-zero levels: relative noise is meaningless
        rel = np.where(local > ZERO_LOSS, floss / local - 1.0, 0.0)
    spikes = _loss_spikes(floss, kk)
    half = rel[n // 2:]
    noise = float(np.median(np.abs(half))) if len(half) else 0.0
    lr_max = c.max_lr
    evidence = {"spikes": len(spikes), "second_half_noise": noise, "loss_drop": c.drop, "max_lr": lr_max}
    at_lr = f" (max lr {lr_max:.2g})" if lr_max else ""
    if len(spikes) >= 2:
        return CurveFinding(
            "lr_too_high", "warning", int(fsteps[spikes[0]]),
            f"{len(spikes)} loss spikes over {SPIKE_FACTOR:g}x the median of the preceding steps, first at step "
            f"{int(fsteps[spikes[0]])}" + at_lr,
            "lower the learning rate 2-5x (LoRA typically 1e-4 to 2e-4), lengthen warmup "
            "(warmup_ratio 0.05-0.1), clip gradients (max_grad_norm 1.0), or raise the effective batch "
            "size with gradient_accumulation_steps", evidence)
    if noise > OSC_NOISE and (c.drop is None or c.drop < OSC_MAX_DROP):
        return CurveFinding(
            "lr_too_high", "warning", int(fsteps[n // 2]),
            f"loss oscillates ±{noise * 100:.0f}% around its local median in the second half and fell "
            f"only {0 if c.drop is None else c.drop * 100:.0f}% overall" + at_lr,
            "lower the learning rate 2-5x, use a cosine or linear decay schedule with warmup, raise "
            "the effective batch size (gradient_accumulation_steps)", evidence)
    return None


def _underfitting(c: Curve) -> CurveFinding | None:
    """underfitting (warning): the loss fell < UNDERFIT_DROP and is still >= UNDERFIT_LEVEL."""
    if c.n < 5 or c.drop is None or not (c.drop < UNDERFIT_DROP and c.end_median >= UNDERFIT_LEVEL):
        return None
    lr_max = c.max_lr
    return CurveFinding(
        "underfitting", "warning", int(c.fsteps[-1]),
        f"training loss is flat and high: {_fmt(c.start_median)} at the start, {_fmt(c.end_median)} at the end "
        f"({c.drop * 100:.0f}% lower)" + (f"; max lr {lr_max:.2g}" if lr_max else ""),
        "raise the learning rate (LoRA: 1e-4 to 2e-4; 2-10x if it was lower), train more steps or "
        "epochs, raise the LoRA rank or target all linear layers; check that labels are not mostly "
        "masked (validate_jsonl.py trainable_tokens) and that the data has a learnable pattern",
        {"start_median_loss": c.start_median, "end_median_loss": c.end_median, "loss_drop": c.drop,
         "max_lr": lr_max})


def _healthy(c: Curve, best: int | None) -> CurveFinding:
    ratio = (float(c.ev[-1]) / c.end_median) if len(c.ev) and c.end_median else None
    return CurveFinding(
        "healthy", "info", best,
        f"loss fell {0 if c.drop is None else c.drop * 100:.0f}% ({_fmt(c.start_median)} → {_fmt(c.end_median)})"
        + (f"; final eval loss {_fmt(float(c.ev[-1]))}, eval/train ratio {ratio:.2f}" if ratio else
           "; no eval loss logged" if not len(c.ev) else ""),
        "nothing to fix in the curve; judge the adapter with evaluate.py against its base on a held-out "
        "test set",
        {"start_median_loss": c.start_median, "end_median_loss": c.end_median, "loss_drop": c.drop,
         "final_eval_loss": float(c.ev[-1]) if len(c.ev) else None, "eval_train_ratio": ratio})


def best_step(c: Curve, findings: Sequence[CurveFinding]) -> tuple[int | None, str]:
    """The checkpoint to keep, with the reason; None when no checkpoint can be trusted or chosen.

    - a blocking zero_loss makes every checkpoint suspect (labels or data are broken): None;
    - divergence: only checkpoints before its onset count;
    - otherwise the lowest eval loss; a tie between several steps is not broken by picking one: None;
    - without eval loss, the last logged step (before the divergence when there is one).
    """
    zero = next((f for f in findings if f.code == "zero_loss" and f.severity == "error"), None)
    if zero is not None:
        return None, (f"none: zero_loss at step {zero.step} means the labels or data are broken, so no checkpoint "
                      f"of this run can be trusted; fix the data and retrain")
    onset = min((f.step for f in findings if f.code == "divergence" and f.severity == "error"), default=None)
    es, ev = c.es, c.ev
    if onset is not None:
        keep = es < onset
        es, ev = es[keep], ev[keep]
    if len(ev):
        mn = float(np.min(ev))
        tied = [int(s) for s, v in zip(es, ev) if math.isclose(float(v), mn, rel_tol=1e-9, abs_tol=1e-12)]
        if len(tied) > 1:
            return None, (f"none: eval loss is tied at {_fmt(mn)} at steps {', '.join(map(str, tied[:10]))}; "
                          f"no checkpoint is better than another by eval loss: compare them with evaluate.py")
        return tied[0], "lowest eval loss" + (" before the divergence" if onset is not None else "")
    if not c.n:
        return None, "none: no finite loss values"
    if onset is not None:
        before = c.fsteps[c.fsteps < onset]
        if not len(before):
            return None, f"none: the run diverged at step {onset}, before any good logged step"
        return int(before[-1]), "last logged step before the divergence (no eval loss logged)"
    return int(c.fsteps[-1]), "last step (no eval loss logged; add a validation set to pick checkpoints)"


def summarise(rows: Sequence[dict], c: Curve) -> dict[str, Any]:
    """Summary fields, each named for what it is (evaluation.md lists them)."""
    return {"steps_logged": len(rows), "train_points": int(len(c.loss)), "eval_points": int(len(c.eloss)),
            "first_step": int(c.steps[0]) if len(c.steps) else None,
            "last_step": int(c.steps[-1]) if len(c.steps) else None,
            "first_logged_loss": float(c.floss[0]) if c.n else None,
            "last_logged_loss": float(c.floss[-1]) if c.n else None,
            "median_window_points": c.window,
            "start_median_loss": c.start_median, "end_median_loss": c.end_median, "loss_drop": c.drop,
            "min_eval_loss": float(np.min(c.ev)) if len(c.ev) else None,
            "final_eval_loss": float(c.ev[-1]) if len(c.ev) else None}


def analyse(rows: Sequence[dict]) -> dict[str, Any]:
    """Findings, best step and summary for log rows (training_log.jsonl shape)."""
    c = Curve.from_rows(rows)
    findings = [f for f in (_non_finite(c), _loss_explosion(c)) if f is not None]
    diverged = bool(findings)
    if not diverged:
        findings += [f for f in (_grad_spikes(c),) if f is not None]
    findings += [f for f in (_zero_loss(c), _overfitting(c)) if f is not None]
    oscillating = None if diverged else _lr_too_high(c)
    if oscillating is not None:
        findings.append(oscillating)
    elif not diverged:
        findings += [f for f in (_underfitting(c),) if f is not None]
    best, reason = best_step(c, findings)
    if not any(f.severity in ("warning", "error") for f in findings):
        findings.append(_healthy(c, best))
    order = {"error": 0, "warning": 1, "info": 2}
    findings.sort(key=lambda f: (order[f.severity], f.step if f.step is not None else -1))
    return {"findings": [f.to_dict() for f in findings], "best_step": best, "best_step_reason": reason,
            "summary": summarise(rows, c)}


def exit_code(findings: Sequence[dict]) -> int:
    """1 when a finding is blocking (severity error: divergence, early/exact zero loss), else 0."""
    return 1 if any(f["severity"] in BLOCKING for f in findings) else 0


# ---------------------------------------------------------------- synthetic curves (docs, tests, demo)

def synthetic_log(kind: str, steps: int = 200, seed: int = 0, eval_every: int = 20) -> list[dict]:
    """A made-up training log showing one pattern (``CODES``); rows in training_log.jsonl shape."""
    rng = np.random.default_rng(seed)
    t = np.arange(1, steps + 1, dtype=float)
    lr = np.where(t < steps * 0.05, 2e-4 * t / (steps * 0.05), 2e-4 * (1 - (t - steps * 0.05) / steps))
    grad = 1.0 + 0.1 * rng.standard_normal(steps)
    ev = None
    if kind == "healthy":
        clean = 0.7 + 1.6 * np.exp(-t / (steps / 4))
        loss = clean * (1 + 0.03 * rng.standard_normal(steps))
        ev = lambda s: (0.75 + 1.6 * np.exp(-s / (steps / 4))) * (1 + 0.01 * rng.standard_normal())  # noqa: E731
    elif kind == "overfitting":
        loss = (0.08 + 2.0 * np.exp(-t / (steps / 5))) * (1 + 0.03 * rng.standard_normal(steps))
        ev = lambda s: 0.9 + 1.3 * np.exp(-s / (steps / 6)) + 0.6 * max(0.0, s / steps - 0.35)  # noqa: E731
    elif kind == "divergence":
        base = 0.9 + 1.4 * np.exp(-t / (steps / 6))
        blow = np.where(t > steps * 0.6, np.exp((t - steps * 0.6) / (steps / 16)) - 1, 0.0)
        loss = (base + blow) * (1 + 0.03 * rng.standard_normal(steps))
        grad = grad + np.where(t > steps * 0.6, 3 * blow, 0.0)
        loss[-3:] = np.nan  # ends in NaN, as real runs do
        grad[-3:] = np.nan
        lr = np.full(steps, 3e-3)
        ev = None
    elif kind == "zero_loss":
        loss = np.maximum(0.0, 2.2 * np.exp(-t / 3.0) - 0.001)
        ev = lambda s: 2.5 + 0.01 * rng.standard_normal()  # noqa: E731
    elif kind == "underfitting":
        loss = (2.4 - 0.1 * t / steps) * (1 + 0.02 * rng.standard_normal(steps))
        lr = np.full(steps, 1e-6)
        ev = lambda s: 2.45 - 0.1 * s / steps  # noqa: E731
    elif kind == "lr_too_high":
        level = 1.3 + 0.3 * np.exp(-t / (steps / 5))
        loss = level * (1 + 0.3 * np.sign(np.sin(t * 1.7)) * rng.uniform(0.5, 1.0, steps))
        for s in (int(steps * 0.4), int(steps * 0.7)):  # knocked out, recovers over a few steps
            loss[s:s + 5] = level[s:s + 5] * np.array([2.8, 2.4, 2.0, 1.6, 1.3])
        lr = np.full(steps, 2e-3)
        ev = lambda s: 1.45 + 0.3 * np.exp(-s / (steps / 5)) + 0.015 * rng.standard_normal()  # noqa: E731
    else:
        raise ValueError(f"unknown kind {kind!r}; choose from {', '.join(CODES)}")
    rows = []
    for i, s in enumerate(t.astype(int)):
        rows.append({"step": int(s), "epoch": round(float(s) / steps * 3, 4), "loss": float(loss[i]),
                     "eval_loss": float(ev(s)) if ev is not None and s % eval_every == 0 else None,
                     "lr": float(lr[i]), "grad_norm": float(grad[i]), "tokens_per_s": None})
    return rows
