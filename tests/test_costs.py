"""estimate_costs.py and finetune_kit.costs: hand-computed ROI, break-even, epochs, warnings."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from conftest import run_json, run_script
from finetune_kit import costs
from finetune_kit import providers as P

TODAY = "2026-11-23"
WORKED = ["--provider", "openai", "--model", "gpt-4.1-mini", "--training-tokens", "2000000", "--examples", "1000",
          "--base-prompt-tokens", "2500", "--ft-prompt-tokens", "400", "--output-tokens", "200",
          "--requests-per-month", "300000", "--as-of", TODAY]


# ---------------------------------------------------------------------- epochs heuristic

@pytest.mark.parametrize("n, epochs", [(5, 20), (20, 5), (40, 3), (10000, 2), (1, 25), (3, 25), (4, 25),
                                       (33, 3), (34, 3), (8333, 3), (8334, 2), (30000, 1)])
def test_auto_epochs(n, epochs):
    assert costs.auto_epochs(n) == epochs


def test_auto_epochs_rejects_zero():
    with pytest.raises(ValueError):
        costs.auto_epochs(0)


# ---------------------------------------------------------------------- ROI, by hand

def _roi(**kw):
    base = dict(training_tokens=2_000_000, epochs=3, train_price=5.00, base_prompt_tokens=2500,
                ft_prompt_tokens=400, output_tokens=200, base_input_price=0.40, base_output_price=1.60,
                ft_input_price=0.80, ft_output_price=3.20, requests_per_month=300_000)
    base.update(kw)
    return costs.roi(**base)


def test_roi_worked_example_by_hand():
    r = _roi()
    # training: 2M tokens x 3 epochs x $5/1M = $30
    assert r["training_tokens_billed"] == 6_000_000 and r["training_cost"] == pytest.approx(30.0)
    # base: 2500 x 0.40 + 200 x 1.60 = 1320 micro-dollars; fine-tuned: 400 x 0.80 + 200 x 3.20 = 960
    assert r["base_cost_per_request"] == pytest.approx(0.00132)
    assert r["ft_cost_per_request"] == pytest.approx(0.00096)
    assert r["savings_per_request"] == pytest.approx(0.00036)
    assert r["monthly_base_cost"] == pytest.approx(396.0) and r["monthly_ft_cost"] == pytest.approx(288.0)
    assert r["monthly_savings"] == pytest.approx(108.0)
    assert r["break_even_requests"] == 83_334            # ceil(30 / 0.00036) = ceil(83,333.3)
    assert r["break_even_months"] == pytest.approx(83_334 / 300_000, abs=1e-4)
    assert r["pays_back"] is True and r["no_break_even_reason"] is None


def test_roi_never_breaks_even_when_the_prompt_is_not_shorter():
    r = _roi(base_prompt_tokens=500)        # 500 x 0.40 + 320 = 520 < 960
    assert r["base_cost_per_request"] == pytest.approx(0.00052)
    assert r["savings_per_request"] == pytest.approx(-0.00044)
    assert r["monthly_savings"] == pytest.approx(-132.0)
    assert r["break_even_requests"] is None and r["break_even_months"] is None
    assert r["pays_back"] is False and r["no_break_even_reason"].startswith("never")
    # equal cost per request also never pays back: base 2 x 400 + 4 x 200 = 1600 tokens is the threshold
    r = _roi(base_prompt_tokens=1600)
    assert r["savings_per_request"] == pytest.approx(0.0) and r["break_even_requests"] is None
    assert _roi(base_prompt_tokens=1601)["break_even_requests"] is not None


def test_roi_with_fixed_monthly_serving_cost():
    kw = dict(training_tokens=None, training_cost=100.0, base_prompt_tokens=1000, ft_prompt_tokens=0,
              output_tokens=0, base_input_price=1.0, base_output_price=1.0, ft_input_price=1.0,
              ft_output_price=1.0, fixed_monthly_cost=150.0)
    # saving 1000 tokens x $1/1M = $0.001 per request
    r = _roi(requests_per_month=200_000, **kw)       # 200 - 150 = 50 a month -> 2 months, 400k requests
    assert r["savings_per_request"] == pytest.approx(0.001)
    assert r["monthly_savings"] == pytest.approx(50.0)
    assert r["break_even_months"] == pytest.approx(2.0) and r["break_even_requests"] == 400_000
    r = _roi(requests_per_month=100_000, **kw)       # 100 - 150 < 0: never
    assert r["monthly_savings"] == pytest.approx(-50.0) and r["break_even_requests"] is None
    assert r["pays_back"] is False
    r = _roi(requests_per_month=200_000, **{**kw, "fixed_monthly_cost": None})   # unknown fixed cost
    assert r["break_even_requests"] is None and r["pays_back"] is None
    assert "fixed monthly" in r["no_break_even_reason"]


def test_request_cost_with_cached_share():
    # 1000 prompt tokens, half cached at 0.25, half at 1.00, no output: 500 + 125 = 625 micro-dollars
    assert costs.request_cost(1000, 0, 1.0, 4.0, cached_share=0.5, cached_price=0.25) == pytest.approx(625e-6)
    # no cached price: everything at the full input price
    assert costs.request_cost(1000, 0, 1.0, 4.0, cached_share=0.5) == pytest.approx(1000e-6)
    assert costs.request_cost(1000, 10, None, 4.0) is None


def test_lora_throughput_scaling_by_hand():
    d = P.load(P.DATA_PATH)
    # reference: 3,083 tok/s for 8B LoRA on an RTX 4090 (165 TFLOPS)
    assert costs.lora_plan(d, "rtx-4090", 8)["tokens_per_s"] == pytest.approx(3083, abs=0.1)
    a100 = costs.lora_plan(d, "a100-80gb", 8)
    assert a100["tokens_per_s"] == pytest.approx(3083 * 312 / 165, abs=0.1) and a100["method"] == "lora"
    h100_70 = costs.lora_plan(d, "h100-sxm", 70)     # LoRA 16.2 x 70/8 = 141.75 GiB > 74.5: QLoRA 64.75 GiB
    assert h100_70["method"] == "qlora"
    assert h100_70["tokens_per_s"] == pytest.approx(2413 * 989 / 165 * 8 / 70, abs=0.1)
    assert costs.lora_plan(d, "rtx-4090", 70)["fits"] is False


# ---------------------------------------------------------------------- the script

def test_worked_example_json_keys_and_values():
    code, doc = run_json("estimate_costs", *WORKED)
    assert code == 0
    for k in ("training_cost", "base_cost_per_request", "ft_cost_per_request", "savings_per_request",
              "monthly_savings", "break_even_requests", "break_even_months", "assumptions", "warnings",
              "self_hosted", "status", "training"):
        assert k in doc
    assert doc["training_cost"] == pytest.approx(30.0) and doc["break_even_requests"] == 83_334
    assert doc["training"]["epochs"] == 3 and doc["training"]["epochs_source"].startswith("auto")
    prices = {a["name"]: a for a in doc["assumptions"] if a["name"].endswith("_price") and a["value"] is not None}
    assert prices["ft_input_price"]["value"] == 0.80 and prices["ft_input_price"]["origin"] == "data"
    for a in prices.values():
        assert a["as_of"] == "2026-11-30" and "openai.com" in a["source"]
    rows = {(r["provider"], r["gpu"], r["tier"]): r for r in doc["self_hosted"]["options"]}
    r = rows[("runpod", "rtx-4090", "community")]
    # hours = load (8B x 2 bytes / 1 GB/s + 120 s) + training (6M / 3083 tok/s) + 10 evals of 200k held-out
    # tokens (10 % of 2M) at 3 x 3083 tok/s
    hours = (16 + 120) / 3600 + 6_000_000 / 3083 / 3600 + 10 * 200_000 / (3 * 3083) / 3600
    assert r["training_hours"] == pytest.approx(hours, abs=1e-3)
    assert r["hours_breakdown"]["load"] == pytest.approx(136 / 3600, abs=1e-3)
    assert r["training_cost"] == pytest.approx(hours * 0.34, abs=1e-3)
    assert r["fixed_monthly_cost"] == pytest.approx(0.34 * 730)
    assert r["monthly_savings"] == pytest.approx(396.0 - 0.34 * 730)


def test_retiring_model_warns_with_dates():
    code, doc = run_json("estimate_costs", *WORKED)
    assert code == 0 and doc["status"]["status"] == "retiring"
    text = " ".join(doc["warnings"])
    assert "2027-01-14" in text and "2027-01-06" in text and "since 2026-05-07" in text
    assert doc["months_until_shutdown"] == pytest.approx(52 / (365.25 / 12), abs=0.01)


def test_slow_payback_before_shutdown_is_flagged():
    args = [a if a != "300000" else "10000" for a in WORKED]     # 10k requests: $3.60/month saving
    code, doc = run_json("estimate_costs", *args)
    assert code == 0 and doc["break_even_months"] > doc["months_until_shutdown"]
    assert any("does not pay back before the shutdown on 2027-01-14" in w for w in doc["warnings"])


@pytest.mark.parametrize("model, as_of, date", [("gpt-4.1-nano", TODAY, "2026-10-23"),
                                                ("gpt-4.1-mini", "2027-02-01", "2027-01-14"),
                                                ("gpt-4o-mini", "2027-01-06", "2027-01-06")])
def test_retired_offering_exits_1_with_the_reason(model, as_of, date):
    args = ["--provider", "openai", "--model", model, "--training-tokens", "1000000", "--as-of", as_of]
    code, doc = run_json("estimate_costs", *args)
    assert code == 1 and doc["status"]["status"] == "retired" and doc["status"]["date"] == date
    assert any(date in w for w in doc["warnings"])
    cp = run_script("estimate_costs", *args)
    assert cp.returncode == 1 and "WARNING" in cp.stdout and date in cp.stdout


def test_bedrock_claude_haiku_is_retired():
    code, doc = run_json("estimate_costs", "--provider", "bedrock", "--model", "claude-3-haiku",
                         "--training-tokens", "1000", "--as-of", TODAY)
    assert code == 1 and "2026-09-10" in doc["warnings"][0]


def test_never_break_even_through_the_script():
    args = [a if a != "2500" else "500" for a in WORKED]
    code, doc = run_json("estimate_costs", *args)
    assert code == 0 and doc["break_even_requests"] is None and doc["pays_back"] is False
    assert any("costs MORE per request" in w for w in doc["warnings"])
    cp = run_script("estimate_costs", *args)
    assert "Break-even: none - never pays back" in cp.stdout


def test_overrides_replace_data_prices_and_say_so():
    code, doc = run_json("estimate_costs", *WORKED, "--ft-input-price", "0.40", "--ft-output-price", "1.60",
                         "--train-price", "10")
    assert code == 0
    assert doc["training_cost"] == pytest.approx(60.0)
    assert doc["ft_cost_per_request"] == pytest.approx((400 * 0.40 + 200 * 1.60) / 1e6)
    origin = {a["name"]: a["origin"] for a in doc["assumptions"]}
    assert origin["train_price"] == "override" and origin["ft_input_price"] == "override"
    assert origin["base_input_price"] == "data"


def test_prices_come_from_the_data_file(tmp_path):
    raw = yaml.safe_load(P.DATA_PATH.read_text(encoding="utf-8"))
    oa = next(p for p in raw["providers"] if p["id"] == "openai")
    next(m for m in oa["models"] if m["id"] == "gpt-4.1-mini")["training_price"]["sft"] = 7.0
    f = tmp_path / "mine.yaml"
    f.write_text(yaml.safe_dump(raw), encoding="utf-8")
    code, doc = run_json("estimate_costs", *WORKED, "--data", str(f))
    assert code == 0 and doc["training_cost"] == pytest.approx(42.0)
    code, doc = run_json("estimate_costs", *WORKED, env={"FT_PROVIDERS_FILE": str(f)})
    assert doc["training_cost"] == pytest.approx(42.0)


def test_size_tiers_and_dpo_price():
    code, doc = run_json("estimate_costs", "--provider", "together", "--params-b", "70", "--method", "dpo",
                         "--training-tokens", "1000000", "--epochs", "2", "--as-of", TODAY)
    assert code == 0 and doc["model"] == "lora-70b-100b"
    assert doc["training_cost"] == pytest.approx(1_000_000 * 2 * 7.25 / 1e6)
    # dedicated endpoint: 4 x H100 at $3.99/h, 730 h a month
    assert doc["fixed_monthly_cost"] == pytest.approx(4 * 3.99 * 730)
    assert any(a["name"] == "fixed_monthly_cost" and a["origin"] == "data" for a in doc["assumptions"])
    assert doc["self_hosted"]["params_b"] == 70
    _, bed = run_json("estimate_costs", "--provider", "aws-bedrock", "--model", "llama-3.1-8b",
                      "--training-tokens", "1000000", "--as-of", TODAY)
    assert bed["fixed_monthly_cost"] is None          # Provisioned Throughput price not in the file
    assert any(a["name"] == "fixed_monthly_cost" and a["origin"] == "missing" for a in bed["assumptions"])
    # the size can come from an open model's name instead of --params-b
    code, doc = run_json("estimate_costs", "--provider", "together", "--model", "llama-3.1-70b",
                         "--training-tokens", "1000000", "--epochs", "3", "--as-of", TODAY)
    assert code == 0 and doc["model"] == "lora-70b-100b" and doc["self_hosted"]["params_b"] == 70
    assert doc["training_cost"] == pytest.approx(3 * 2.90)


def test_limit_warnings():
    _, doc = run_json("estimate_costs", "--provider", "openai", "--model", "gpt-4o-mini", "--training-tokens",
                      "5000", "--examples", "5", "--as-of", TODAY)
    assert doc["training"]["epochs"] == 20
    assert any("at least 10 examples" in w for w in doc["warnings"])
    _, doc = run_json("estimate_costs", "--provider", "vertex", "--model", "gemini-2.5-flash",
                      "--training-tokens", "5000000", "--examples", "2000000", "--as-of", TODAY)
    assert any("at most 1,000,000 examples" in w for w in doc["warnings"])
    assert doc["base_cost_per_request"] is None and doc["training_cost"] == pytest.approx(5e6 * 1 * 5 / 1e6)


def test_compare_excludes_retired_and_prices_self_hosted():
    code, doc = run_json("estimate_costs", "--compare", "--training-tokens", "2000000", "--examples", "1000",
                         "--params-b", "8", "--base-input-price", "0.40", "--base-output-price", "1.60",
                         "--base-prompt-tokens", "2500", "--ft-prompt-tokens", "400", "--output-tokens", "200",
                         "--requests-per-month", "300000", "--as-of", TODAY)
    assert code == 0
    rows = {(r["provider"], r["model"]): r for r in doc["compare"]["rows"]}
    excluded = {(e["provider"], e["model"]) for e in doc["compare"]["excluded"]}
    assert {("openai", "gpt-4.1-nano"), ("openai", "o4-mini"), ("aws-bedrock", "claude-3-haiku"),
            ("google-vertex", "gemini-2.5-pro"), ("google-vertex", "gemini-2.5-flash"),
            ("google-vertex", "gemini-2.5-flash-lite"), ("google-vertex", "gemini-2.0-flash")} == excluded
    assert not excluded & set(rows)
    assert rows[("openai", "gpt-4o-mini")]["monthly_savings"] == pytest.approx(396 - 300_000 * (400 * .3 + 200 * 1.2) / 1e6)
    oa = rows[("openai", "gpt-4o-mini")]
    assert "savings end when it shuts down 2027-01-14" in oa["note"] and oa["savings_until"] == "2027-01-14"
    assert "NOT FOR NEW CUSTOMERS" in oa["note"] and oa["new_customers"] is False
    assert rows[("together", "lora-up-to-16b")]["training_cost"] == pytest.approx(6 * 0.48)
    assert ("together", "lora-70b-100b") not in rows             # only the 8B tier
    assert rows[("runpod", "rtx-4090 (community)")]["fixed_monthly_cost"] == pytest.approx(0.34 * 730)
    assert rows[("together", "lora-up-to-16b")]["monthly_ft_cost"] == pytest.approx(3.99 * 730)
    cp = run_script("estimate_costs", "--compare", "--training-tokens", "1000", "--as-of", TODAY)
    assert cp.returncode == 0 and "excluded: aws-bedrock/claude-3-haiku - retired (shut down 2026-09-10)" in cp.stdout


def test_own_hardware_rows_need_a_gpu_price():
    _, doc = run_json("estimate_costs", *WORKED)
    assert not any(r["provider"] == "own-hardware" for r in doc["self_hosted"]["options"])
    _, doc = run_json("estimate_costs", *WORKED, "--gpu", "rtx4090", "--gpu-price", "0.50", "--throughput", "1000")
    own = [r for r in doc["self_hosted"]["options"] if r["provider"] == "own-hardware"]
    assert len(own) == 1 and own[0]["gpu"] == "rtx-4090"            # only YOUR gpu, not every GPU row
    assert own[0]["price_origin"] == "override" and own[0]["tokens_per_s"] == 1000
    assert own[0]["price_per_hour"] == pytest.approx(0.50)
    # rentals keep their own prices and only the chosen GPU type is shown
    rent = [r for r in doc["self_hosted"]["options"] if r["provider"] != "own-hardware"]
    assert rent and all(r["gpu"] == "rtx-4090" for r in rent)
    assert {r["price_per_hour"] for r in rent} == {0.34, 0.74}
    b = own[0]["hours_breakdown"]
    assert b["train"] == pytest.approx(6_000_000 / 1000 / 3600, abs=1e-3)
    assert own[0]["training_hours"] == pytest.approx(b["load"] + b["train"] + b["eval"], abs=2e-3)


def test_price_my_4090_alone_with_power_cost():
    """Issue 22 item 7: one owned GPU, priced by power (and amortisation), without --provider/--compare."""
    code, doc = run_json("estimate_costs", "--gpu", "rtx4090", "--power-price", "0.30", "--gpu-price", "0.05",
                         "--params-b", "8", "--training-tokens", "2000000", "--examples", "1000",
                         "--eval-tokens", "100000", "--evals", "4", "--as-of", TODAY)
    assert code == 0 and doc["provider"] is None
    own = [r for r in doc["self_hosted"]["options"] if r["provider"] == "own-hardware"]
    assert len(own) == 1
    r = own[0]
    assert r["price_per_hour"] == pytest.approx(0.05 + 0.30 * 450 / 1000)    # 450 W board power
    assert "450 W" in r["price_basis"] and "amortised" in r["price_basis"]
    tps = 3083
    expect = (16 + 120) / 3600 + 6_000_000 / tps / 3600 + 4 * 100_000 / (3 * tps) / 3600
    assert r["training_hours"] == pytest.approx(expect, abs=1e-3)
    assert r["training_cost"] == pytest.approx(expect * (0.05 + 0.135), abs=1e-3)
    assert r["fixed_monthly_cost"] == pytest.approx((0.05 + 0.135) * 730, abs=0.01)
    # --gpu-watts replaces the data file's board power
    _, doc = run_json("estimate_costs", "--gpu", "rtx-4090", "--power-price", "0.30", "--gpu-watts", "300",
                      "--training-tokens", "1000", "--as-of", TODAY)
    own = [r for r in doc["self_hosted"]["options"] if r["provider"] == "own-hardware"]
    assert own[0]["price_per_hour"] == pytest.approx(0.09)
    cp = run_script("estimate_costs", "--gpu", "rtx4090", "--power-price", "0.30", "--training-tokens", "2000000",
                    "--as-of", TODAY)
    assert cp.returncode == 0 and "own-hardware" in cp.stdout and "load + training + evaluations" in cp.stdout


# ---------------------------------------------------------------------- --train with the real tokenizer

def _chat(i: int) -> dict:
    return {"messages": [{"role": "system", "content": "Classify the ticket as billing, bug or other."},
                         {"role": "user", "content": f"Ticket {i}: my invoice #{i} was charged twice."},
                         {"role": "assistant", "content": "billing"}]}


def _tool_example() -> dict:
    return {"messages": [{"role": "user", "content": "Weather in Paris?"},
                         {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {
                             "name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
                         {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
                         {"role": "assistant", "content": "Sunny."}],
            "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {
                "type": "object", "properties": {"city": {"type": "string"}}}}}]}


def test_train_file_total_equals_the_validators_total_tokens(tmp_path):
    from finetune_kit import validate

    f = tmp_path / "train.jsonl"
    f.write_text("".join(json.dumps(_chat(i)) + "\n" for i in range(11)) + json.dumps(_tool_example()) + "\n",
                 encoding="utf-8")
    v = validate.validate_files([str(f)], tokenizer="cl100k_base")
    code, doc = run_json("estimate_costs", "--train", str(f), "--train-price", "1", "--tokenizer", "cl100k_base")
    assert code == 0 and v["valid"]
    assert doc["training"]["tokens_per_epoch"] == v["files"][0]["stats"]["total_tokens"]
    assert doc["training"]["examples"] == v["files"][0]["stats"]["examples"] == 12


def test_train_file_is_counted_with_the_validator_tokenizer(tmp_path):
    from finetune_kit import chat, tokens

    f = tmp_path / "train.jsonl"
    f.write_text("".join(json.dumps(_chat(i)) + "\n" for i in range(12)), encoding="utf-8")
    code, doc = run_json("estimate_costs", "--provider", "openai", "--model", "gpt-4o-mini", "--train", str(f),
                         "--tokenizer", "cl100k_base", "--as-of", TODAY)
    assert code == 0
    counter = tokens.get_counter("cl100k_base")
    expected = sum(counter.count_chat(chat.ChatExample.model_validate(_chat(i)))[0] for i in range(12))
    assert expected > 12 * 20
    t = doc["training"]
    assert t["tokens_per_epoch"] == expected and t["examples"] == 12 and t["tokenizer"] == "cl100k_base"
    assert t["epochs"] == costs.auto_epochs(12) == 8
    assert doc["training_cost"] == pytest.approx(expected * 8 * 3.00 / 1e6, abs=1e-4)
    assert t["counted_from"] == [str(f)]


def test_train_file_default_tokenizer_is_the_models_encoding_or_an_announced_fallback(tmp_path):
    f = tmp_path / "train.jsonl"
    f.write_text("".join(json.dumps(_chat(i)) + "\n" for i in range(3)), encoding="utf-8")
    code, doc = run_json("estimate_costs", "--provider", "openai", "--model", "gpt-4.1-mini", "--train", str(f),
                         "--as-of", TODAY)
    assert code == 0
    tok = doc["training"]["tokenizer"]
    assert tok in ("o200k_base", "cl100k_base")
    if tok == "cl100k_base":                  # offline: o200k_base is not shipped; say so
        assert any("o200k_base is not available offline" in w for w in doc["warnings"])


def test_train_file_with_bad_lines_counts_the_good_ones(tmp_path):
    f = tmp_path / "train.jsonl"
    f.write_text(json.dumps(_chat(1)) + "\n{not json\n" + json.dumps({"foo": 1}) + "\n", encoding="utf-8")
    code, doc = run_json("estimate_costs", "--train", str(f), "--train-price", "1", "--tokenizer", "cl100k_base")
    assert code == 0 and doc["training"]["examples"] == 1
    assert any("the validator found 2 error(s)" in w for w in doc["warnings"])


# ---------------------------------------------------------------------- bad input: exit 2, one line

@pytest.mark.parametrize("args, msg", [
    ([], "say what to price"),
    (["--provider", "nosuch"], "unknown provider"),
    (["--provider", "openai", "--model", "gpt-9"], "unknown model"),
    (["--provider", "openai"], "several models"),
    (["--provider", "runpod"], "GPU rental"),
    (["--model", "gpt-4.1"], "--model needs --provider"),
    (["--provider", "openai", "--model", "gpt-4.1", "--training-tokens", "-5"], "must be >= 0"),
    (["--provider", "openai", "--model", "gpt-4.1", "--cached-share", "1.5"], "between 0 and 1"),
    (["--provider", "openai", "--model", "gpt-4.1", "--epochs", "many"], "--epochs"),
    (["--provider", "openai", "--model", "gpt-4.1", "--epochs", "0"], "--epochs"),
    (["--provider", "openai", "--model", "gpt-4.1", "--base-prompt-tokens", "100"], "both"),
    (["--provider", "openai", "--model", "gpt-4.1", "--as-of", "yesterday"], "--as-of"),
    (["--provider", "openai", "--model", "gpt-4.1", "--train", "/nonexistent/x.jsonl"], "not found"),
    (["--provider", "openai", "--model", "gpt-4.1", "--training-tokens", "abc"], "not a whole number"),
    (["--provider", "together", "--params-b", "500", "--training-tokens", "10"], "no price tier"),
    (["--compare", "--params-b", "0"], "must be > 0"),
    (["--compare", "--gpu-price", "0.5"], "add --gpu ID"),
    (["--compare", "--power-price", "0.3"], "add --gpu ID"),
    (["--gpu", "tpu-v9", "--gpu-price", "0.5"], "unknown GPU"),
    (["--gpu", "rtx4090", "--power-price", "-1"], "must be > 0"),
    (["--gpu", "rtx4090", "--evals", "-1"], "--evals"),
    (["--current-model", "gpt-9-ultra", "--compare"], "no prices for --current-model"),
])
def test_bad_input_exits_2_with_one_line(args, msg):
    cp = run_script("estimate_costs", *args)
    assert cp.returncode == 2, cp.stdout + cp.stderr
    lines = cp.stderr.strip().splitlines()
    assert len(lines) == 1 and msg in lines[0] and "Traceback" not in cp.stderr


def test_garbage_train_file_exits_2(tmp_path):
    f = tmp_path / "garbage.jsonl"
    f.write_bytes(b"\x00\xff\xfe garbage \x89PNG\r\n\x1a\n" * 10)
    code, doc = run_json("estimate_costs", "--provider", "openai", "--model", "gpt-4.1", "--train", str(f),
                         "--tokenizer", "cl100k_base")
    assert code == 2 and "no valid training examples" in doc["error"]


def test_bad_data_file_exits_2(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("schema_version: 1\nproviders: []\n", encoding="utf-8")
    cp = run_script("estimate_costs", "--provider", "openai", "--data", str(f))
    assert cp.returncode == 2 and "fails the schema" in cp.stderr


def test_input_file_is_not_modified(tmp_path):
    f = tmp_path / "train.jsonl"
    f.write_text(json.dumps(_chat(1)) + "\n", encoding="utf-8")
    before = f.read_bytes()
    run_json("estimate_costs", "--train", str(f), "--train-price", "1", "--tokenizer", "cl100k_base")
    assert f.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["train.jsonl"]


@pytest.mark.slow
def test_train_file_counted_with_a_hugging_face_tokenizer(tmp_path):
    """Open models: --tokenizer smollm2-135m counts with the model's chat template (the validator's counter)."""
    from finetune_kit import chat, tokens

    f = tmp_path / "train.jsonl"
    f.write_text("".join(json.dumps(_chat(i)) + "\n" for i in range(4)), encoding="utf-8")
    c = costs.count_training_files([str(f)], tokenizer="smollm2-135m")
    counter = tokens.get_counter("smollm2-135m")
    exp = [counter.count_chat(chat.ChatExample.model_validate(_chat(i))) for i in range(4)]
    assert c["examples"] == 4 and c["tokenizer"] == "smollm2-135m"
    assert c["total_tokens"] == sum(t for t, _ in exp) and c["trainable_tokens"] == sum(tr for _, tr in exp)
    assert 0 < c["trainable_tokens"] < c["total_tokens"]


# ---------------------------------------------------------------------- today's model as the baseline (issue 14)

QUESTION = ["--training-tokens", "2000000", "--examples", "1000", "--base-prompt-tokens", "2500",
            "--ft-prompt-tokens", "400", "--output-tokens", "200", "--requests-per-month", "200000"]


def test_current_model_is_the_baseline_and_the_prompt_only_row_is_always_shown():
    """'We use gpt-4.1 with a 2,500-token prompt at 200k requests/month - would fine-tuning a smaller model
    pay off?' Baseline gpt-4.1: 2500 x 2.00 + 200 x 8.00 = $0.0066/request = $1,320/month; fine-tuned
    gpt-4.1-mini with a 400-token prompt: 400 x 0.80 + 200 x 3.20 = $0.00096 = $192/month."""
    code, doc = run_json("estimate_costs", "--current-model", "gpt-4.1", "--provider", "openai", "--model",
                         "gpt-4.1-mini", *QUESTION, "--as-of", "2026-11-30")
    assert code == 0
    assert doc["baseline"]["model"] == "openai/gpt-4.1" and doc["baseline"]["origin"] == "current_model"
    assert doc["monthly_base_cost"] == pytest.approx(1320.0)
    assert doc["monthly_ft_cost"] == pytest.approx(192.0) and doc["monthly_savings"] == pytest.approx(1128.0)
    po = {r["model"]: r for r in doc["prompt_only"]}
    # gpt-4.1-mini shuts down the same day as gpt-4.1 (2027-01-14): never a prompt-only switch for it
    assert "gpt-4.1-mini" not in po
    skipped = {e["model"]: e for e in doc["prompt_only_excluded"]}
    assert "same day" in skipped["gpt-4.1-mini"]["reason"] and "2027-01-14" in skipped["gpt-4.1-mini"]["reason"]
    # gpt-6-luna (OpenAI's named replacement): 2500 x 0.10 + 200 x 0.50 = $0.00035 = $70/month
    assert po["gpt-6-luna"]["monthly_cost"] == pytest.approx(70.0) and po["gpt-6-luna"]["status"] == "available"
    # gpt-5.4-mini (mini tier): 2500 x 0.75 + 200 x 4.50 = $0.002775 = $555/month
    assert po["gpt-5.4-mini"]["monthly_cost"] == pytest.approx(555.0)
    assert any("today's model openai/gpt-4.1 is retiring (shuts down 2027-01-14)" in w for w in doc["warnings"])
    # the single-offering estimate of a retiring, closed offering says so in warnings
    assert any("RETIRING offering" in w and "2027-01-06" in w and "shut down 2027-01-14" in w
               for w in doc["warnings"])
    assert any("NOT FOR NEW CUSTOMERS" in w and "2026-05-07" in w for w in doc["warnings"])
    cp = run_script("estimate_costs", "--current-model", "gpt-4.1", "--provider", "openai", "--model",
                    "gpt-4.1-mini", *QUESTION, "--as-of", "2026-11-30")
    assert "Baseline:   today's model openai/gpt-4.1" in cp.stdout
    assert "Prompt-only alternatives" in cp.stdout and "$1,250.00" in cp.stdout
    assert "not offered as a prompt-only switch: openai/gpt-4.1-mini" in cp.stdout
    # without --current-model the baseline is the small model's own base price ($72) - and the script says so
    _, doc = run_json("estimate_costs", "--provider", "openai", "--model", "gpt-4.1-mini", *QUESTION,
                      "--as-of", "2026-11-30")
    assert doc["monthly_savings"] == pytest.approx(72.0)
    assert any("no --current-model" in w for w in doc["warnings"])


def test_price_flags_override_the_current_model():
    _, doc = run_json("estimate_costs", "--current-model", "gpt-4.1", "--base-input-price", "1.00",
                      "--provider", "openai", "--model", "gpt-4.1-mini", *QUESTION, "--as-of", "2026-11-30")
    assert doc["baseline"]["input_price"] == 1.00 and doc["baseline"]["output_price"] == 8.00
    assert doc["baseline"]["origin"] == "current_model+flags"
    assert doc["monthly_base_cost"] == pytest.approx(200_000 * (2500 * 1.0 + 200 * 8.0) / 1e6)


def test_compare_prices_every_provider_for_the_question():
    """Done-when of issue 14: a priced, non-retired monthly row for OpenAI (dated), Azure, Vertex, Bedrock,
    Together, Fireworks and self-hosted 4090/A100/H100."""
    code, doc = run_json("estimate_costs", "--current-model", "gpt-4.1", "--compare", "--params-b", "8", *QUESTION,
                         "--as-of", "2026-11-30")
    assert code == 0 and doc["compare"]["baseline"] == "openai/gpt-4.1"
    rows = doc["compare"]["rows"]
    priced = [r for r in rows if r["monthly_ft_cost"] is not None and not r["status"].startswith("retired")]
    for prov in ("openai", "azure-openai", "google-vertex", "aws-bedrock", "together", "fireworks"):
        assert any(r["provider"] == prov and r["kind"] == "managed" for r in priced), prov
    oa = next(r for r in priced if (r["provider"], r["model"]) == ("openai", "gpt-4.1-mini"))
    assert oa["status"] == "retiring (no new jobs from 2027-01-06, shuts down 2027-01-14)"
    assert oa["monthly_savings"] == pytest.approx(1128.0) and oa["savings_until"] == "2027-01-14"
    # Azure: same token price as the base model + $1.70/h hosting per deployment
    az = next(r for r in priced if (r["provider"], r["model"]) == ("azure-openai", "gpt-4.1-mini"))
    assert az["monthly_ft_cost"] == pytest.approx(200_000 * (400 * 0.40 + 200 * 1.60) / 1e6 + 1.70 * 730)
    # dedicated endpoints: no per-token charge, GPU-hours 24/7
    fw = next(r for r in priced if r["provider"] == "fireworks")
    assert fw["monthly_ft_cost"] == pytest.approx(3.89 * 730)
    gpus = {r["model"].split(" ")[0] for r in priced if r["kind"] == "self_hosted"}
    assert {"rtx-4090", "h100-sxm"} <= gpus and gpus & {"a100-80gb", "a100-40gb"}
    assert not any(r["kind"] == "prompt_only" and r["model"] == "gpt-4.1-mini" for r in rows)
    assert {r["model"] for r in rows if r["kind"] == "prompt_only"} == {"gpt-5.4-mini", "gpt-6-luna"}
    # offerings a new customer cannot buy (OpenAI, Azure fine-tuning) carry the caveat and come last
    closed = [i for i, r in enumerate(rows) if not r["new_customers"]]
    assert closed and closed == list(range(len(rows) - len(closed), len(rows)))
    assert {rows[i]["provider"] for i in closed} == {"openai", "azure-openai"}
    assert all("NOT FOR NEW CUSTOMERS" in rows[i]["note"] and rows[i]["savings_until"] for i in closed)
    cp = run_script("estimate_costs", "--current-model", "gpt-4.1", "--compare", "--params-b", "8", *QUESTION,
                    "--as-of", "2026-11-30")
    assert "$1,128.00 until 2027-01-14" in cp.stdout and "NOT FOR NEW CUSTOMERS" in cp.stdout
    retired = {(e["provider"], e["model"]) for e in doc["compare"]["excluded"]}
    assert not retired & {(r["provider"], r["model"]) for r in rows}
    for r in rows:                                   # no retired model is ever priced as an option
        assert not r["status"].startswith("retired"), r


def test_cached_share_uses_the_data_files_cached_prices():
    _, doc = run_json("estimate_costs", "--current-model", "gpt-4.1", "--provider", "openai", "--model",
                      "gpt-4.1-mini", *QUESTION, "--cached-share", "0.8", "--as-of", "2026-11-30")
    # baseline: 500 fresh x 2.00 + 2000 cached x 0.50 + 200 x 8.00 = 3600 micro-dollars
    assert doc["base_cost_per_request"] == pytest.approx(0.0036)
    # fine-tuned gpt-4.1-mini: 80 fresh x 0.80 + 320 cached x 0.20 + 200 x 3.20 = 768
    assert doc["ft_cost_per_request"] == pytest.approx(0.000768)
    assert not any("cached-input price is missing" in w for w in doc["warnings"])
    _, doc = run_json("estimate_costs", "--provider", "google-vertex", "--model", "gemini-3.5-flash", *QUESTION,
                      "--cached-share", "0.5", "--as-of", "2026-11-30")
    assert any("cached-input price is missing" in w for w in doc["warnings"])


def test_stale_data_file_warns_after_90_days():
    _, doc = run_json("estimate_costs", "--compare", "--training-tokens", "1000", "--as-of", "2027-02-27")
    assert not any("days old" in w for w in doc["warnings"])          # 89 days
    _, doc = run_json("estimate_costs", "--compare", "--training-tokens", "1000", "--as-of", "2027-03-01")
    assert any("91 days old" in w and "Refreshing the data" in w for w in doc["warnings"])


def test_current_model_alone_prices_today_and_the_prompt_only_switch():
    cp = run_script("estimate_costs", "--current-model", "gpt-4.1", "--base-prompt-tokens", "2500",
                    "--output-tokens", "200", "--requests-per-month", "200000", "--as-of", "2026-11-30")
    assert cp.returncode == 0, cp.stderr
    assert "Baseline: today's model openai/gpt-4.1" in cp.stdout and "$1,320.00/month" in cp.stdout
    assert "gpt-6-luna" in cp.stdout and "$1,250.00" in cp.stdout and "$1,056.00" not in cp.stdout
    assert "--ft-prompt-tokens not given" not in cp.stdout           # nothing is fine-tuned here
    # after the shutdown the retired small model is no longer offered as an alternative
    _, doc = run_json("estimate_costs", "--current-model", "gpt-4.1", "--base-prompt-tokens", "2500",
                      "--output-tokens", "200", "--requests-per-month", "200000", "--as-of", "2027-01-20")
    assert [r["model"] for r in doc["prompt_only"]] == ["gpt-5.4-mini", "gpt-6-luna"]
    assert doc["baseline"]["status"] == "retired (shut down 2027-01-14)"


def test_prompt_only_switch_is_filtered_from_the_data_not_a_list(tmp_path):
    """The rule lives in code: a candidate that shuts down within ~6 months, or on/before today's model,
    is never offered - whatever the file's `smaller` list says."""
    import yaml
    raw = yaml.safe_load(P.DATA_PATH.read_text(encoding="utf-8"))
    luna = next(m for m in raw["inference_models"] if m["id"] == "gpt-6-luna")
    luna["retires"] = "2027-03-01"                      # inside the 183-day horizon from 2026-11-30
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump(raw))
    _, doc = run_json("estimate_costs", "--current-model", "gpt-4.1", "--base-prompt-tokens", "2500",
                      "--output-tokens", "200", "--requests-per-month", "200000", "--as-of", "2026-11-30",
                      "--data", str(f))
    assert [r["model"] for r in doc["prompt_only"]] == ["gpt-5.4-mini"]
    why = {e["model"]: e["reason"] for e in doc["prompt_only_excluded"]}
    assert "horizon" in why["gpt-6-luna"] and "same day" in why["gpt-4.1-mini"]


def test_automatic_prompt_caching_is_not_left_out_silently():
    """2,500-token prompt, no --cached-share: the 2,100 tokens fine-tuning removes are the repeated prefix;
    cached in 128-token steps = 2,048 -> share 0.82: baseline 450 x 2.00 + 2050 x 0.50 + 200 x 8.00
    = 3525 micro-dollars = $705/month instead of $1,320 (every fine-tune saving $615 smaller)."""
    _, doc = run_json("estimate_costs", "--current-model", "gpt-4.1", "--compare", *QUESTION, "--as-of", "2026-11-30")
    c = doc["prompt_caching"]
    assert c["typical_cached_share"] == pytest.approx(0.82)
    assert c["monthly_base_cost_cached"] == pytest.approx(705.0)
    assert c["monthly_savings_overstated_by"] == pytest.approx(615.0)
    assert any("--cached-share 0.82" in w and "automatically" in w for w in doc["warnings"])
    _, doc = run_json("estimate_costs", "--current-model", "gpt-4.1", "--compare", *QUESTION, "--cached-share", "0",
                      "--as-of", "2026-11-30")
    assert doc["prompt_caching"] is None                 # the user said: nothing is cached
    _, doc = run_json("estimate_costs", "--current-model", "gpt-4.1", "--base-prompt-tokens", "900",
                      "--output-tokens", "200", "--as-of", "2026-11-30")
    assert doc["prompt_caching"] is None                 # under 1,024 tokens nothing is cached
    _, doc = run_json("estimate_costs", "--current-model", "gpt-4.1", "--base-prompt-tokens", "2500",
                      "--output-tokens", "200", "--as-of", "2026-11-30")
    assert any("pass --cached-share F" in w for w in doc["warnings"])     # no FT prompt: cannot derive a share


def test_short_unpacked_examples_make_the_self_hosted_hours_a_lower_bound():
    _, doc = run_json("estimate_costs", "--gpu", "rtx4090", "--gpu-price", "0.1", "--training-tokens", "30000",
                      "--examples", "300", "--as-of", "2026-11-30")
    assert any("LOWER BOUND" in w and "average 100 tokens" in w and "--packing" in w for w in doc["warnings"])
    _, doc = run_json("estimate_costs", "--gpu", "rtx4090", "--gpu-price", "0.1", "--training-tokens", "3000000",
                      "--examples", "1000", "--as-of", "2026-11-30")
    assert not any("LOWER BOUND" in w for w in doc["warnings"])


def test_evals_flag_default_is_the_library_default():
    """estimate_costs.py spells the default out (its --help must work without the library's packages)."""
    import importlib.util

    from conftest import SCRIPTS
    from finetune_kit import costs

    spec = importlib.util.spec_from_file_location("_est", SCRIPTS / "estimate_costs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    act = next(a for a in mod.build_parser()._actions if "--evals" in a.option_strings)
    assert act.default == costs.DEFAULT_EVALS
