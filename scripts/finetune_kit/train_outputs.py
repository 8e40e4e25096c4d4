"""Run outputs: the output directory, run_manifest.json, training_log.jsonl, the adapter files.

Only the main process (rank 0) writes here; under ``accelerate launch`` the other ranks train
and stay silent, so a DDP run leaves exactly one adapter, log and manifest.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import cli, memory, models
from .errors import BlockingProblem, UsageError
from .outputs import check_disjoint, owned_files

LOG_KEYS = ("step", "epoch", "loss", "eval_loss", "lr", "grad_norm", "tokens_per_s")
MANIFEST = "run_manifest.json"
LOG_FILE = "training_log.jsonl"
PREFLIGHT_FILE = "preflight.json"
CHECKPOINTS = "checkpoints"


def check_output_dir(output_dir: str, *, force: bool, resume: bool, inputs=()) -> None:
    """Refuse early (before the preflight) to clobber an output dir, or to put it around/inside an input."""
    check_disjoint(output_dir, inputs, "--output-dir")
    output_dir_ready(Path(output_dir), force=force, resume=resume)


def output_dir_ready(out: Path, *, force: bool, resume: bool) -> None:
    if resume:
        if not (out / CHECKPOINTS).is_dir():
            raise UsageError(f"--resume: {out / CHECKPOINTS} not found; nothing to resume (start a new run "
                             f"without --resume)")
        return
    if out.exists() and not out.is_dir():
        raise UsageError(f"output {out} exists and is not a directory")
    if out.exists() and any(out.iterdir()):
        if not force:
            raise UsageError(f"output directory {out} already exists and is not empty; pass --force to replace "
                             f"it, or --resume to continue its interrupted run")
        ours = any((out / n).exists() for n in (MANIFEST, LOG_FILE, CHECKPOINTS, "adapter_config.json",
                                                 PREFLIGHT_FILE))
        if not ours:
            raise UsageError(f"refusing to --force replace {out}: it does not look like a train_lora.py output "
                             f"(no {MANIFEST}, {CHECKPOINTS}/ or adapter files); choose an empty or new directory")


TRAIN_OWNED = (MANIFEST, LOG_FILE, PREFLIGHT_FILE, CHECKPOINTS, "loss_curve.png")


def clear_dir(out: Path) -> None:
    """Remove what an earlier run wrote in ``out`` (after a successful preflight, with --force): the fixed
    run files and those listed in its run_manifest.json. The user's other files there are kept."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        owned = set(TRAIN_OWNED) | {Path(n).parts[0] for n in owned_files(out, MANIFEST)}
        victims = [out / n for n in sorted(owned) if os.path.lexists(out / n)]
        if victims:
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out))
            for v in victims:
                os.replace(v, old / v.name)
            shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        raise UsageError(f"cannot write {out}: {exc.strerror or exc}; choose a writable --output-dir") from None


def set_cpu_threads(torch) -> dict[str, Any]:
    """Fewer torch threads on a busy CPU: oversubscribed OpenMP threads spin and can make a step
    several times slower (measured 8x on a 2-core machine at load 8). FT_CPU_THREADS or
    OMP_NUM_THREADS override the choice."""
    env = os.environ.get("FT_CPU_THREADS") or os.environ.get("OMP_NUM_THREADS")
    if env and env.isdigit() and int(env) > 0:
        torch.set_num_threads(int(env))
        return {"threads": int(env), "reason": "environment"}
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    n = max(1, min(cores, cores - int(max(0.0, load - 1.0))))
    torch.set_num_threads(n)
    return {"threads": n, "cores": cores, "load_average": round(load, 2),
            "reason": "busy machine" if n < cores else "all cores"}


def packages() -> dict[str, str | None]:
    import importlib.metadata as md

    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("torch", "transformers", "peft", "trl", "datasets", "accelerate", "bitsandbytes", "unsloth",
                 "safetensors", "tokenizers"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def last_checkpoint(ckpt_dir: Path) -> Path | None:
    best, best_step = None, -1
    if not ckpt_dir.is_dir():
        return None
    for d in ckpt_dir.iterdir():
        if d.is_dir() and d.name.startswith("checkpoint-") and (d / "trainer_state.json").is_file():
            try:
                s = int(d.name.split("-", 1)[1])
            except ValueError:
                continue
            if s > best_step:
                best, best_step = d, s
    return best


def truncate_log(path: Path, max_step: int) -> None:
    """On resume: drop log lines past the checkpoint (they are logged again)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", 0) <= max_step:
                keep.append(line)
        except ValueError:
            continue
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(k + "\n" for k in keep), encoding="utf-8")
    os.replace(tmp, path)


def finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def run_log_callback(transformers, log_path: Path, tokens, total_steps: int, *, main: bool = True):
    """The training_log.jsonl writer. ``tokens()`` returns the real tokens trained so far over all
    processes (a collective under DDP: every rank calls it at each logging step); only ``main``
    writes."""
    TrainerCallback = transformers.TrainerCallback

    class JsonlLog(TrainerCallback):
        """Write training_log.jsonl: one line per logging step, written at once (a kill loses nothing);
        an evaluation at the same step is merged into that line by rewriting it."""

        def __init__(self):
            self.fh = open(log_path, "a", encoding="utf-8") if main else None  # noqa: SIM115 - closed at end
            self.last: tuple[dict, int] | None = None  # (row, byte offset where its line starts)
            self.last_t = time.perf_counter()
            self.last_tokens = 0
            self.rows: list[dict] = []
            self.bar = cli.progress(total=total_steps, desc="training", unit="step", show=main)

        def _write(self, row: dict, replace_last: bool = False):
            if self.fh is None:
                return
            if replace_last and self.last is not None:
                self.fh.truncate(self.last[1])
                self.rows.pop()
            self.fh.seek(0, os.SEEK_END)
            offset = self.fh.tell()
            self.fh.write(json.dumps(row) + "\n")
            self.fh.flush()
            self.rows.append(row)
            self.last = (row, offset)

        def on_train_begin(self, args, state, control, **kw):
            self.bar.n = state.global_step
            self.bar.refresh()
            self.last_t = time.perf_counter()
            self.last_tokens = tokens()

        def on_step_end(self, args, state, control, **kw):
            self.bar.update(state.global_step - self.bar.n)

        def on_log(self, args, state, control, logs=None, **kw):
            logs = logs or {}
            step = state.global_step
            if "eval_loss" in logs:
                if self.last is not None and self.last[0]["step"] == step:
                    self._write({**self.last[0], "eval_loss": logs["eval_loss"]}, replace_last=True)
                else:
                    row = {k: None for k in LOG_KEYS}
                    row.update({"step": step, "epoch": round(float(logs.get("epoch", state.epoch or 0)), 4),
                                "eval_loss": logs["eval_loss"]})
                    self._write(row)
                if main:
                    say(f"step {step}: eval_loss {logs['eval_loss']:.4f}")
                return
            if "loss" not in logs:
                return
            now_tokens = tokens()
            now = time.perf_counter()
            dt = now - self.last_t
            dtok = now_tokens - self.last_tokens
            self.last_t, self.last_tokens = now, now_tokens
            row = {"step": step, "epoch": round(float(logs.get("epoch", state.epoch or 0)), 4),
                   "loss": logs.get("loss"), "eval_loss": None, "lr": logs.get("learning_rate"),
                   "grad_norm": logs.get("grad_norm"),
                   "tokens_per_s": round(dtok / dt, 1) if dt > 0 and dtok else None}
            self._write(row)
            loss = logs.get("loss")
            if not main:
                return
            if not sys.stderr.isatty() or os.environ.get("FT_NO_PROGRESS") == "1":
                say(f"step {step}/{total_steps}: loss {loss if loss is None else round(loss, 4)} "
                    f"lr {logs.get('learning_rate', 0):.2e} tok/s {row['tokens_per_s']}")
            else:
                self.bar.set_postfix(loss=f"{loss:.4f}" if finite(loss) else loss)

        def on_train_end(self, args, state, control, **kw):
            self.close()

        def close(self):
            if self.fh is not None and not self.fh.closed:
                self.fh.close()
            self.bar.close()

    return JsonlLog()


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def absolute_paths(conf: dict[str, Any]) -> dict[str, Any]:
    """Paths in the stored config made absolute, so --resume works from any directory."""
    def ab(v):
        return str(Path(v).resolve()) if isinstance(v, str) and v and Path(v).exists() else v
    conf = json.loads(json.dumps(conf))
    conf["data"] = {k: ab(v) for k, v in (conf.get("data") or {}).items()}
    for k in ("chat_template", "init_adapter", "base_model", "output_dir"):
        conf[k] = ab(conf.get(k))
    return conf


def peak_memory(torch, cuda: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if cuda:
        out["peak_memory"] = {"kind": "cuda_max_allocated",
                              "gib": round(torch.cuda.max_memory_allocated() / memory.GIB, 2),
                              "reserved_gib": round(torch.cuda.max_memory_reserved() / memory.GIB, 2)}
    else:
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        out["peak_memory"] = {"kind": "process_max_rss", "gib": round(rss / memory.GIB, 2)}
    return out


def save_adapter(trainer, tokenizer, ref: models.ModelRef, out: Path) -> list[str]:
    tmp = Path(tempfile.mkdtemp(prefix=".adapter.", suffix=".tmp", dir=out))
    try:
        model = trainer.model
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        ac_path = tmp / "adapter_config.json"
        if ac_path.is_file():
            ac = json.loads(ac_path.read_text(encoding="utf-8"))
            ac["base_model_name_or_path"] = models.model_dir_for_saving(ref)
            ac_path.write_text(json.dumps(ac, indent=2) + "\n", encoding="utf-8")
        if not (tmp / "adapter_model.safetensors").is_file():
            raise BlockingProblem("the adapter was not saved as adapter_model.safetensors")
        names = []
        for f in sorted(tmp.iterdir()):
            if f.is_file() and f.name != "README.md":
                os.replace(f, out / f.name)
                names.append(f.name)
        return names
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def plot(rows: list[dict], out: Path) -> None:
    if not rows:
        return
    try:
        from . import plots

        plots.plot_loss_curve(rows, out / "loss_curve.png", title="training loss")
    except Exception as exc:  # noqa: BLE001 - a plot must not fail a finished run
        say(f"warning: could not draw loss_curve.png: {exc}")


def read_log(path: Path) -> list[dict]:
    rows = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError):
                rows.append(json.loads(line))
    return rows


def iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def previous_config(output_dir: str | None) -> dict[str, Any] | None:
    """The config of the run in ``output_dir`` (for --resume without repeating every flag)."""
    if not output_dir:
        return None
    m = Path(output_dir) / MANIFEST
    if not m.is_file():
        return None
    try:
        return json.loads(m.read_text(encoding="utf-8")).get("config")
    except (ValueError, OSError):
        return None


def check_resume_data(output_dir: str, report: dict[str, Any]) -> None:
    m = Path(output_dir) / MANIFEST
    if not m.is_file():
        return
    prev = json.loads(m.read_text(encoding="utf-8"))
    for name, d in (prev.get("data") or {}).items():
        now = (report.get("data") or {}).get(name)
        if now and d.get("sha256") and now.get("sha256") != d["sha256"]:
            raise UsageError(f"--resume: the {name} data changed since the interrupted run ({d['file']}); "
                             f"--resume continues the same run on the same data - to train an existing "
                             f"adapter on new data use --init-adapter {output_dir} with a new --output-dir")


def format_result(manifest: dict[str, Any], out: str) -> str:
    pm = manifest.get("peak_memory") or {}
    return "\n".join([
        f"trained {manifest['steps']} steps ({manifest['epochs']} epochs) in {manifest['duration_s']} s; "
        f"loss {manifest.get('first_loss')} -> {manifest.get('final_loss')}"
        + (f"; best eval_loss {manifest['best_eval_loss']}" if manifest.get("best_eval_loss") is not None else ""),
        f"trainable params {manifest['trainable_params']:,} of {manifest['total_params']:,}; peak memory "
        f"{pm.get('gib')} GiB ({pm.get('kind')})",
        f"adapter: {out}  (loss curve: {Path(out) / 'loss_curve.png'})",
    ])
