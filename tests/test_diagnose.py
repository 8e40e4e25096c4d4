"""diagnose_training.py: every finding code from synthetic curves, all three log formats, plots, bad input."""

from __future__ import annotations

import csv
import json
import math

import pytest

from conftest import ROOT, run_json, run_script
from finetune_kit import diagnose, plots

EXPECTED_EXIT = {"healthy": 0, "overfitting": 0, "underfitting": 0, "lr_too_high": 0, "divergence": 1,
                 "zero_loss": 1}


def _write_log(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("code", diagnose.CODES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_each_synthetic_curve_gives_exactly_its_code(code, seed):
    res = diagnose.analyse(diagnose.synthetic_log(code, seed=seed))
    assert {f["code"] for f in res["findings"]} == {code}, res["findings"]
    for f in res["findings"]:
        assert f["fix"] and f["message"] and f["severity"] in ("error", "warning", "info")
        assert isinstance(f["evidence"], dict)


@pytest.mark.parametrize("code", diagnose.CODES)
def test_script_json_and_exit_codes(tmp_path, code):
    log = _write_log(tmp_path / "training_log.jsonl", diagnose.synthetic_log(code, seed=5))
    rc, doc = run_json("diagnose_training", log)
    assert rc == EXPECTED_EXIT[code], doc
    assert [f["code"] for f in doc["findings"]][0] == code
    assert set(doc["findings"][0]) >= {"code", "severity", "step", "message", "fix", "evidence"}
    assert doc["format"] == "training_log_jsonl"
    if code == "zero_loss":  # a blocking zero loss makes every checkpoint suspect
        assert doc["best_step"] is None and doc["best_step_reason"].startswith("none: zero_loss")
    else:
        assert isinstance(doc["best_step"], int)


def _zero_at_30_log():
    """The reported run: loss 2.0 at step 1, exactly 0 from step 30; eval every 10 steps, tied at 0 after."""
    rows = []
    for s in range(1, 51):
        loss = 0.0 if s >= 30 else 2.0 * (1 - s / 30)
        ev = None if s % 10 else (0.0 if s >= 30 else 2.1 * (1 - s / 30))
        rows.append({"step": s, "loss": loss, "eval_loss": ev, "lr": 1e-4})
    return rows


def test_blocking_zero_loss_has_no_best_step(tmp_path):
    rc, doc = run_json("diagnose_training", _write_log(tmp_path / "training_log.jsonl", _zero_at_30_log()))
    assert rc == 1
    assert [f["code"] for f in doc["findings"] if f["severity"] == "error"] == ["zero_loss"]
    assert doc["best_step"] is None and "zero_loss" in doc["best_step_reason"]
    cp = run_script("diagnose_training", tmp_path / "training_log.jsonl")
    assert "best_step: none" in cp.stdout


def test_tied_eval_loss_is_not_resolved_by_taking_the_first():
    rows = [{"step": s, "loss": 2.0 - 0.01 * s, "eval_loss": (1.5 if s >= 30 else 1.9) if s % 10 == 0 else None}
            for s in range(1, 61)]
    res = diagnose.analyse(rows)
    assert res["best_step"] is None
    assert "tied" in res["best_step_reason"] and "30, 40, 50, 60" in res["best_step_reason"]
    rows[39]["eval_loss"] = 1.49  # one strictly lowest point: that one
    assert diagnose.analyse(rows)["best_step"] == 40


def test_divergence_best_step_is_lowest_eval_before_onset():
    rows = [{"step": s, "loss": 2.0 - 0.02 * s if s < 40 else 50.0 * s, "eval_loss": None} for s in range(1, 61)]
    for s, ev in ((10, 1.9), (20, 1.6), (30, 1.7), (50, 1.0)):  # 50: after the blow-up, not trustworthy
        rows[s - 1]["eval_loss"] = ev
    res = diagnose.analyse(rows)
    assert any(f["code"] == "divergence" and f["severity"] == "error" for f in res["findings"])
    assert res["best_step"] == 20 and "before the divergence" in res["best_step_reason"]


def test_summary_names_first_and_last_logged_values():
    s = diagnose.analyse(_zero_at_30_log())["summary"]
    assert s["first_logged_loss"] == pytest.approx(2.0 * (1 - 1 / 30))
    assert s["last_logged_loss"] == 0.0
    assert s["start_median_loss"] > 1.0 and s["end_median_loss"] == 0.0
    assert s["loss_drop"] == pytest.approx(1.0)  # never null when the loss fell
    assert s["median_window_points"] == 5
    assert "first_loss" not in s and "final_loss" not in s
    # a run whose first window's median is 0: loss_drop falls back to the first logged value
    rows = [{"step": s, "loss": 2.0 if s == 1 else 0.0} for s in range(1, 31)]
    s2 = diagnose.analyse(rows)["summary"]
    assert s2["start_median_loss"] == 0.0 and s2["first_logged_loss"] == 2.0 and s2["loss_drop"] == 1.0


def test_overfitting_best_step_is_min_eval_and_ratio_band():
    res = diagnose.analyse(diagnose.synthetic_log("overfitting", seed=0))
    f = res["findings"][0]
    assert res["best_step"] == 80 == f["step"] and res["best_step_reason"] == "lowest eval loss"
    assert f["evidence"]["ratio_band"] == "memorising" and f["evidence"]["eval_train_ratio"] > 2
    assert "step 80" in f["fix"]


def test_trainer_state_with_nan_is_divergence(tmp_path):
    hist = []
    for s in range(1, 41):
        loss = 2.0 - 0.03 * s if s < 30 else float("nan")
        hist.append({"epoch": s / 40, "grad_norm": 1.0 if s < 30 else float("inf"), "learning_rate": 1e-4,
                     "loss": loss, "step": s})
        if s % 10 == 0:
            hist.append({"epoch": s / 40, "eval_loss": 2.1 - 0.02 * s if s < 30 else float("nan"), "step": s})
    hist.append({"epoch": 1.0, "step": 40, "train_loss": 1.5, "train_runtime": 10.0})
    p = tmp_path / "trainer_state.json"
    p.write_text(json.dumps({"global_step": 40, "log_history": hist}))  # json writes NaN/Infinity tokens
    rc, doc = run_json("diagnose_training", p)
    assert rc == 1 and doc["format"] == "trainer_state"
    f = doc["findings"][0]
    assert f["code"] == "divergence" and f["severity"] == "error" and f["step"] == 30
    assert f["evidence"]["first_non_finite"]["series"] == "loss"
    assert doc["best_step"] == 20  # lowest finite eval loss
    # a checkpoint directory is found from its parent run dir
    ck = tmp_path / "run" / "checkpoint-40"
    ck.mkdir(parents=True)
    (ck / "trainer_state.json").write_text(p.read_text())
    rc2, doc2 = run_json("diagnose_training", tmp_path / "run")
    assert rc2 == 1 and doc2["log"].endswith("checkpoint-40/trainer_state.json")


def test_openai_results_csv_overfitting(tmp_path):
    p = tmp_path / "step_metrics.csv"
    with open(p, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"])
        for s in range(1, 121):
            train = 0.05 + 2.0 * math.exp(-s / 20)
            valid = (0.8 + 1.2 * math.exp(-s / 15) + 0.006 * max(0, s - 40)) if s % 10 == 0 else ""
            w.writerow([s, f"{train:.4f}", "0.5", f"{valid:.4f}" if valid != "" else "", ""])
    rc, doc = run_json("diagnose_training", p)
    assert rc == 0 and doc["format"] == "openai_csv"
    assert doc["findings"][0]["code"] == "overfitting"
    assert doc["best_step"] == doc["findings"][0]["step"] == 40  # 0.883 at 40, 0.903 at 50


def test_zero_loss_exact_zero_from_the_start(tmp_path):
    rows = [{"step": s, "loss": 0.0, "eval_loss": None} for s in range(1, 30)]
    res = diagnose.analyse(diagnose._merge([diagnose._row(r["step"], loss=r["loss"]) for r in rows]))
    f = res["findings"][0]
    assert f["code"] == "zero_loss" and f["severity"] == "error" and f["step"] == 1
    assert "label" in f["fix"]


def test_late_near_zero_loss_is_a_memorisation_warning():
    rows = [diagnose._row(s, loss=2.0 * math.exp(-s / 15)) for s in range(1, 201)]
    res = diagnose.analyse(rows)
    codes = {(f["code"], f["severity"]) for f in res["findings"]}
    assert ("zero_loss", "warning") in codes and diagnose.exit_code(res["findings"]) == 0


def test_noisy_small_batch_curve_is_still_healthy():
    import numpy as np

    rng = np.random.default_rng(11)
    t = np.arange(1, 301)
    loss = (0.8 + 1.5 * np.exp(-t / 60)) * np.exp(0.2 * rng.standard_normal(300))  # ±20% per-batch noise
    rows = [diagnose._row(int(s), loss=float(v), eval_loss=(0.85 + 1.5 * math.exp(-s / 60)) if s % 25 == 0
                          else None) for s, v in zip(t, loss)]
    assert [f["code"] for f in diagnose.analyse(rows)["findings"]] == ["healthy"]


def test_oscillation_without_spikes_is_lr_too_high():
    rows = [diagnose._row(s, loss=1.6 * (1 + (0.3 if s % 2 else -0.3))) for s in range(1, 101)]
    res = diagnose.analyse(rows)
    assert [f["code"] for f in res["findings"]] == ["lr_too_high"]
    assert res["findings"][0]["evidence"]["second_half_noise"] > 0.15


def test_grad_norm_spike_alone_is_a_divergence_warning():
    rows = [diagnose._row(s, loss=2.0 * math.exp(-s / 80) + 0.5, grad_norm=40.0 if s == 70 else 1.0)
            for s in range(1, 101)]
    res = diagnose.analyse(rows)
    div = [f for f in res["findings"] if f["code"] == "divergence"]
    assert len(div) == 1 and div[0]["severity"] == "warning" and div[0]["step"] == 70
    assert diagnose.exit_code(res["findings"]) == 0


def test_no_eval_best_step_is_last_or_before_divergence():
    rows = [r | {"eval_loss": None} for r in diagnose.synthetic_log("healthy")]
    assert diagnose.analyse(rows)["best_step"] == 200
    rows = [r | {"eval_loss": None} for r in diagnose.synthetic_log("divergence")]
    res = diagnose.analyse(rows)
    onset = min(f["step"] for f in res["findings"] if f["code"] == "divergence")
    assert res["best_step"] == onset - 1


def test_plot_png_marks_and_no_clobber(tmp_path):
    log = _write_log(tmp_path / "training_log.jsonl", diagnose.synthetic_log("divergence"))
    png = tmp_path / "curve.png"
    cp = run_script("diagnose_training", log, "--plot", png)
    assert cp.returncode == 1 and str(png) in cp.stdout and "divergence" in cp.stdout
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    cp = run_script("diagnose_training", log, "--plot", png)
    assert cp.returncode == 2 and "--force" in cp.stderr
    assert run_script("diagnose_training", log, "--plot", png, "--force").returncode == 1


def test_plot_function_accepts_sparse_rows_as_the_trainer_writes_them(tmp_path):
    rows = [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.8, "eval_loss": 1.9}, {"step": 3, "loss": None},
            {"step": 4, "loss": 1.5, "lr": 1e-4, "grad_norm": None}]
    out = plots.plot_loss_curve(rows, tmp_path / "x.png")
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_docs_figures_script_writes_one_png_per_code(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_figures", ROOT / "docs" / "make_figures.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    written = mod.main(tmp_path)
    assert sorted(p.name for p in written) == sorted(f"curve_{c}.png" for c in diagnose.CODES)
    for c in diagnose.CODES:  # the committed pictures exist and are embedded in evaluation.md
        assert (ROOT / "docs" / "img" / f"curve_{c}.png").is_file()
        assert f"docs/img/curve_{c}.png" in (ROOT / "evaluation.md").read_text()


@pytest.mark.parametrize("content,name", [
    (b"\x00\x01garbage", "log.bin"), (b"not,a,log\n1,2,3\n", "x.csv"), (b'{"foo": 1}', "state.json"),
    (b'{"step": "abc", "loss": 1}\n', "training_log.jsonl"), (b"{broken\n", "training_log.jsonl"),
    (b'{"log_history": [{"step": 1}]}', "trainer_state.json"), (None, "missing.jsonl"),
    (None, "empty_dir")])
def test_bad_input_exits_2(tmp_path, content, name):
    p = tmp_path / name
    if name == "empty_dir":
        p.mkdir()
    elif content is not None:
        p.write_bytes(content)
    cp = run_script("diagnose_training", p)
    assert cp.returncode == 2, (cp.stdout, cp.stderr)
    assert cp.stderr.startswith("error: ") and len(cp.stderr.strip().splitlines()) == 1 and cp.stdout == ""


def test_zero_loss_names_the_cause_from_the_curve():
    # fallen from 2.0 to exactly 0, eval 0 too: leakage/duplicates, not a masked label
    f = next(x for x in diagnose.analyse(_zero_at_30_log())["findings"] if x["code"] == "zero_loss")
    assert f["severity"] == "error" and "leakage" in f["message"] and "overlap" in f["fix"]
    assert f["evidence"]["first_logged_loss"] > 1 and f["evidence"]["min_eval_loss"] == 0.0
    # the same curve ending at 0.003 instead of 0: still blocking, because the eval loss is ~0 as well
    rows = [r | {"loss": 0.003 if r["loss"] == 0.0 else r["loss"],
                 "eval_loss": 0.004 if r["eval_loss"] == 0.0 else r["eval_loss"]} for r in _zero_at_30_log()]
    res = diagnose.analyse(rows)
    assert [x["severity"] for x in res["findings"] if x["code"] == "zero_loss"] == ["error"]
    assert res["best_step"] is None
    # ~0 from the first step: the label mask
    rows = [{"step": s, "loss": 0.0, "eval_loss": None} for s in range(1, 21)]
    f = diagnose.analyse(rows)["findings"][0]
    assert f["code"] == "zero_loss" and "from the start" in f["message"] and "label mask" in f["fix"]
    # late memorisation with an honest eval loss stays a warning, and its fix does not promise a best_step
    rows = [{"step": s, "loss": max(0.005, 2.0 - 0.04 * s), "eval_loss": 1.2 if s % 10 == 0 else None}
            for s in range(1, 61)]
    f = next(x for x in diagnose.analyse(rows)["findings"] if x["code"] == "zero_loss")
    assert f["severity"] == "warning" and "when there is one" in f["fix"]
