"""The dated providers data file: schema, lifecycle status, lookups, and guides that match it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml

from finetune_kit import docs_tables
from finetune_kit import providers as P
from finetune_kit.errors import UsageError

ROOT = Path(__file__).resolve().parent.parent
D = dt.date


@pytest.fixture(scope="module")
def data():
    return P.load(P.DATA_PATH)


def _raw():
    return yaml.safe_load(P.DATA_PATH.read_text(encoding="utf-8"))


# ---------------------------------------------------------------------- schema

def test_every_entry_is_dated_and_sourced():
    raw = _raw()
    entries = list(raw["gpu_specs"].values()) + [raw["throughput_reference"]]
    entries += raw.get("inference_models", []) + raw.get("other_services", [])
    for p in raw["providers"]:
        entries.append(p)
        entries += p.get("models", []) + p.get("gpus", [])
    assert len(entries) > 30
    for e in entries:
        assert e.get("as_of") is not None and str(e["as_of"]).strip(), e
        assert isinstance(e.get("source"), str) and len(e["source"]) >= 3, e
        assert P.AS_OF_RE.match(str(e["as_of"])), e["as_of"]
        # an original public page a user can open - never a team note
        assert "facts-2026" not in e["source"] and ("http" in e["source"] or e["source"].startswith("n/a")), e


def test_statuses_are_valid_and_every_null_price_is_explained(data):
    for p in data.providers:
        assert P.provider_status(p, data.as_of).status in ("available", "retiring", "retired")
        for m in p.models:
            st = P.status_of(p, m, data.as_of)
            assert st.status in ("available", "retiring", "retired")
            nulls = [f for f in P.PRICE_FIELDS if getattr(m, f) is None]
            nulls += [k for k, v in m.training_price.items() if v is None]
            if nulls:
                assert m.price_note, (p.id, m.id, nulls)


def test_covers_the_required_providers_and_facts(data):
    ids = {p.id for p in data.providers}
    assert {"openai", "azure-openai", "google-vertex", "aws-bedrock", "together", "fireworks", "runpod",
            "lambda"} <= ids
    oa = data.provider("openai")
    mini = data.offering(oa, "gpt-4.1-mini")
    assert (mini.training_price["sft"], mini.base_input_price, mini.base_output_price,
            mini.ft_input_price, mini.ft_output_price) == (5.00, 0.40, 1.60, 0.80, 3.20)
    assert mini.retires == D(2027, 1, 14) and oa.training_ends == D(2027, 1, 6)
    assert data.offering(oa, "gpt-4.1-nano").retires == D(2026, 10, 23)
    assert data.offering(data.provider("bedrock"), "claude-3-haiku").retires == D(2026, 9, 10)
    flash = data.offering(data.provider("vertex"), "gemini-2.5-flash")
    assert flash.training_price["sft"] == 5.00 and flash.limits.max_tokens_per_example == 131072
    assert flash.limits.max_examples == 1_000_000 and flash.limits.max_file_gb == 1
    assert flash.retires == D(2026, 10, 16)
    assert data.offering(data.provider("vertex"), "gemini-2.0-flash").retires <= D(2026, 6, 1)
    assert {"gemini-3.5-flash", "gemini-3.5-flash-lite", "gemini-3.1-flash-lite"} <= {
        m.id for m in data.provider("vertex").models}
    az = data.provider("azure")
    for mid, train, dep in (("gpt-4.1", D(2027, 4, 14), D(2027, 10, 14)), ("gpt-4.1-mini", D(2027, 4, 14), D(2027, 10, 14)),
                            ("gpt-4o", D(2027, 4, 1), D(2027, 10, 1)), ("o4-mini", D(2027, 4, 16), D(2027, 10, 16))):
        m = data.offering(az, mid)
        assert (m.training_ends, m.retires, m.serving, m.hosting_per_hour) == (train, dep, "hosted", 1.70)
    assert data.offering(az, "gpt-4.1-mini").fixed_monthly_cost() == pytest.approx(1.70 * 730)
    assert data.offering(data.provider("bedrock"), "nova-2-lite").regions == ["us-east-1"]
    t = data.provider("together")
    assert [m.params_range_b for m in t.models][:2] == [(0, 16), (16.1, 69)]
    assert data.offering(t, params_b=8).fixed_monthly_cost() == pytest.approx(3.99 * 730)
    gone = {o.id: o for o in data.other_services}
    assert gone["mistral"].status == gone["cohere"].status == "deprecated" and "2025-09-15" in gone["cohere"].note
    assert {"tinker", "prime-intellect", "wandb-serverless-rl", "predibase"} <= set(gone)
    oa_notes = " ".join(data.provider("openai").notes)
    assert "Base-model access ends too" in oa_notes and "2027-01-14" in oa_notes
    llama = data.offering(data.provider("aws-bedrock"), "llama-3.1-8b")
    assert llama.serving == "provisioned" and llama.training_price["sft"] is None and llama.price_note
    gpus = {(p.id, g.id, g.tier): g.price_per_hour for p, g, _ in P.gpu_offers(data)}
    assert gpus[("runpod", "a100-80gb", "community")] == 1.39
    assert gpus[("runpod", "h100-sxm", "community")] == 2.69
    assert gpus[("runpod", "rtx-4090", "community")] == 0.34
    assert gpus[("runpod", "rtx-4090", "secure")] == 0.74
    assert gpus[("lambda", "h100-sxm", "on-demand")] == 4.29
    assert gpus[("lambda", "a100-40gb", "on-demand")] == 1.99


def _write(tmp_path, raw) -> Path:
    p = tmp_path / "providers.yaml"
    p.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return p


def test_schema_rejects_undated_unsourced_or_unexplained_entries(tmp_path):
    raw = _raw()
    del raw["providers"][0]["models"][0]["as_of"]
    with pytest.raises(UsageError, match="as_of"):
        P.load(_write(tmp_path, raw))
    raw = _raw()
    raw["providers"][0]["models"][1]["source"] = ""
    with pytest.raises(UsageError, match="source"):
        P.load(_write(tmp_path, raw))
    raw = _raw()
    m = raw["providers"][0]["models"][0]
    m["ft_input_price"] = None
    m.pop("price_note", None)
    with pytest.raises(UsageError, match="price_note"):
        P.load(_write(tmp_path, raw))
    raw = _raw()
    raw["providers"][0]["models"][0]["source"] = "facts-2026.md (team note)"
    with pytest.raises(UsageError, match="original public URL"):
        P.load(_write(tmp_path, raw))
    raw = _raw()
    raw["providers"][-1]["gpus"][0]["id"] = "tpu-v9"
    with pytest.raises(UsageError, match="gpu_specs"):
        P.load(_write(tmp_path, raw))
    (tmp_path / "bad.yaml").write_text("providers: [unclosed", encoding="utf-8")
    with pytest.raises(UsageError, match="not valid YAML"):
        P.load(tmp_path / "bad.yaml")


# ---------------------------------------------------------------------- status

# Labels carry BOTH dates with their meaning ("no new jobs from" = training_ends, "shuts down" = retires),
# never one bare date that reads the same for two different events.
@pytest.mark.parametrize("on, model, status, date, can_train, label", [
    (D(2026, 11, 23), "gpt-4.1-mini", "retiring", "2027-01-14", True,
     "retiring (no new jobs from 2027-01-06, shuts down 2027-01-14)"),
    (D(2027, 1, 5), "gpt-4o-mini", "retiring", "2027-01-14", True,
     "retiring (no new jobs from 2027-01-06, shuts down 2027-01-14)"),
    (D(2027, 1, 6), "gpt-4.1", "retired", "2027-01-06", False, "retired (no new jobs since 2027-01-06)"),
    (D(2027, 1, 14), "gpt-4.1-mini", "retired", "2027-01-14", False, "retired (shut down 2027-01-14)"),
    (D(2026, 10, 22), "gpt-4.1-nano", "retiring", "2026-10-23", True,
     "retiring (no new jobs from 2027-01-06, shuts down 2026-10-23)"),
    (D(2026, 10, 23), "gpt-4.1-nano", "retired", "2026-10-23", False, "retired (shut down 2026-10-23)"),
    (D(2026, 11, 23), "o4-mini", "retired", "2026-10-23", False, "retired (shut down 2026-10-23)"),
])
def test_openai_lifecycle(data, on, model, status, date, can_train, label):
    p = data.provider("openai")
    st = P.status_of(p, data.offering(p, model), on)
    assert (st.status, st.date.isoformat(), st.can_train) == (status, date, can_train)
    assert st.label == label
    assert st.warnings and date in st.warnings[0]


def test_azure_training_dates_are_no_earlier_than_and_never_read_as_a_start(data):
    az = data.provider("azure-openai")
    st = P.status_of(az, data.offering(az, "gpt-4.1"), D(2026, 11, 30))
    assert st.label == "retiring (training retirement no earlier than 2027-04-14, shuts down 2027-10-14)"
    assert any("training retirement no earlier than 2027-04-14" in w for w in st.warnings)
    assert not any("no new fine-tuning jobs from 2027-04-14" in w for w in st.warnings)
    assert "training no earlier than" not in " ".join(az.notes)       # read as "training starts then"
    assert P.closed_to_new_customers(az) and P.closed_to_new_customers(data.provider("openai"))
    assert P.closed_to_new_customers(data.provider("google-vertex")) is None


def test_too_soon_rule():
    on = D(2026, 11, 30)
    assert P.too_soon(None, on) is None
    assert P.too_soon(D(2027, 10, 14), on) is None                              # > 6 months away
    assert "horizon" in P.too_soon(D(2027, 3, 1), on)                           # within ~6 months
    assert "same day" in P.too_soon(D(2028, 1, 14), on, not_before=D(2028, 1, 14))
    assert "before" in P.too_soon(D(2028, 1, 1), on, not_before=D(2028, 1, 14))
    assert "shut down" in P.too_soon(D(2026, 11, 30), on)


def test_past_restrictions_become_dated_warnings(data):
    p = data.provider("openai")
    st = P.status_of(p, data.offering(p, "gpt-4.1-mini"), D(2026, 11, 23))
    text = " ".join(st.warnings)
    assert "since 2026-05-07" in text and "since 2026-07-02" in text and "2027-01-06" in text
    early = P.status_of(p, data.offering(p, "gpt-4.1-mini"), D(2026, 4, 1))
    assert "from 2026-05-07" in " ".join(early.warnings)


def test_bedrock_claude_haiku_retired_and_others_available(data):
    b = data.provider("aws-bedrock")
    assert P.status_of(b, data.offering(b, "claude-3-haiku"), D(2026, 9, 9)).status == "retiring"
    assert P.status_of(b, data.offering(b, "claude-3-haiku"), D(2026, 9, 10)).status == "retired"
    assert P.status_of(b, data.offering(b, "nova-lite"), D(2026, 11, 23)).status == "available"
    assert P.provider_status(b, D(2026, 11, 23)).status == "available"
    assert P.provider_status(data.provider("openai"), D(2026, 11, 23)).label == "retiring (no new jobs from 2027-01-06)"


# ---------------------------------------------------------------------- lookups

def test_lookups_aliases_tiers_and_errors(data):
    assert data.provider("Vertex").id == "google-vertex"
    t = data.provider("together")
    assert data.offering(t, params_b=8).id == "lora-up-to-16b"
    assert data.offering(t, params_b=70).id == "lora-70b-100b"
    assert data.offering(t, "llama-3.1-70b").id == "lora-70b-100b"   # size read from the name
    assert data.offering(data.provider("fireworks"), params_b=16).id == "up-to-16b"
    assert data.offering(data.provider("fireworks"), params_b=16.05).id == "16b-80b"   # above 16B
    assert data.offering(t, params_b=16.05).id == "lora-16b-69b"                       # gap: next tier up
    with pytest.raises(UsageError, match="no price tier"):
        data.offering(t, params_b=405)
    with pytest.raises(UsageError, match="unknown provider"):
        data.provider("nosuch")
    with pytest.raises(UsageError, match="several models"):
        data.offering(data.provider("openai"))
    with pytest.raises(UsageError, match="unknown model"):
        data.offering(data.provider("openai"), "gpt-5")


# ---------------------------------------------------------------------- guides

def test_guides_match_the_data_file():
    """providers.md/costs.md tables and worked examples equal what the generator produces now."""
    d = P.load(P.DATA_PATH)
    for g in docs_tables.GUIDES:
        text = (ROOT / g).read_text(encoding="utf-8")
        assert docs_tables.GEN_RE.search(text), f"{g} has no generated table"
        assert docs_tables.render(text, d) == text, (
            f"{g} is out of date: run: cd scripts && python3 -m finetune_kit.docs_tables --write")
    assert "BEGIN EXAMPLE: worked" in (ROOT / "costs.md").read_text(encoding="utf-8")


def test_generated_tables_contain_the_file_numbers():
    text = (ROOT / "costs.md").read_text(encoding="utf-8")
    assert "| openai | `gpt-4.1-mini` | 0.40 / 1.60 | 0.80 / 3.20 | 0.100 / 0.200 | 2.0x / 2.0x | 0.00 |" in text
    assert "| azure-openai | `gpt-4.1-mini` | 0.40 / 1.60 | 0.40 / 1.60 | 0.100 / 0.100 | 1.0x / 1.0x | 1,241.00 |" in text
    prov = (ROOT / "providers.md").read_text(encoding="utf-8")
    assert "| 2027-01-06 | openai | existing active customers can no longer create fine-tuning jobs" in prov
    assert "| 2027-04-14 | azure-openai | training closes (no earlier than) for gpt-4.1, gpt-4.1-mini" in prov
    assert "**retired (shut down 2026-09-10)**" in prov


def test_numbers_quoted_in_the_guides_are_in_the_data_file():
    for g in docs_tables.GUIDES:
        text = (ROOT / g).read_text(encoding="utf-8")
        assert docs_tables.quote_problems(text) == [], g
    # the check can fail: a made-up price or date in prose is caught, also next to real ones
    probe = "gpt-4.1-mini fine-tuned 0.80/3.20 vs base 0.40/1.60, but 0.45 and 2031-02-30 are invented."
    problems = docs_tables.quote_problems(probe)
    assert problems == ["price 0.45 is not in providers.yaml", "date 2031-02-30 is not in providers.yaml"]


def test_stale_guide_is_detected(tmp_path):
    text = (ROOT / "providers.md").read_text(encoding="utf-8").replace("| 2027-01-14 |", "| 2027-02-14 |", 1)
    d = P.load(P.DATA_PATH)
    assert docs_tables.render(text, d, examples=False) != text


def test_generator_cli_check(tmp_path):
    import subprocess
    import sys

    cp = subprocess.run([sys.executable, str(ROOT / "scripts" / "finetune_kit" / "docs_tables.py"), "--check",
                         "--no-examples"], capture_output=True, text=True)
    assert cp.returncode == 0, cp.stderr
    assert "match" in cp.stdout


# ---------------------------------------------------------------------- nothing retired is recommended

def _retire_problems(d: P.DataFile) -> list[str]:
    """Entries the skill would recommend on the file's own as_of whose retirement/closing date is already past."""
    from finetune_kit import decide

    out = []
    for p, m, st in P.recommendable(d, d.as_of):
        for when in (m.retires, m.training_ends, p.retires, p.training_ends):
            if when is not None and when <= d.as_of:
                out.append(f"{p.id}/{m.id} ({when})")
    sug, _ = decide.suggest_providers(d, "none", d.as_of)
    for s in sug:
        for m in s["models"]:
            o = d.offering(d.provider(s["provider"]), m["model"])
            if o.retires and o.retires <= d.as_of:
                out.append(f"suggested {s['provider']}/{o.id} ({o.retires})")
    return out


def test_no_recommendable_entry_retires_before_the_files_as_of(data):
    assert _retire_problems(data) == []


def test_the_retirement_check_fails_on_a_stale_entry(tmp_path):
    """Move the file's as_of past OpenAI's shutdown but keep a hand-edited 'available' entry: caught."""
    raw = _raw()
    raw["as_of"] = "2027-02-01"
    oa = next(p for p in raw["providers"] if p["id"] == "openai")
    m = next(m for m in oa["models"] if m["id"] == "gpt-4.1-mini")
    d = P.load(_write(tmp_path, raw))
    assert _retire_problems(d) == []           # status logic excludes it ...
    # ... and a bug that ignored retirement would be caught
    real = P.recommendable
    try:
        P.recommendable = lambda d, on: [(p, mm, P.status_of(p, mm, on)) for p in d.providers for mm in p.models]
        assert any("gpt-4.1-mini" in x for x in _retire_problems(d))
    finally:
        P.recommendable = real
    assert m["retires"]


def test_choosing_section_names_no_retired_model(data):
    text = (ROOT / "providers.md").read_text(encoding="utf-8")
    choosing = text[text.index("## Choosing"):text.index("## Refreshing the data")]
    retired = {m.id for p in data.providers for m in p.models if P.status_of(p, m, data.as_of).status == "retired"
               and not any(m.id == o.id for q in data.providers for o in q.models
                           if P.status_of(q, o, data.as_of).status != "retired")}
    assert retired >= {"gemini-2.5-flash-lite", "claude-3-haiku"}
    for mid in retired:
        assert f"`{mid}`" not in choosing and mid not in choosing, mid


def test_current_model_lookup_and_stale_warning(data):
    c = data.current_model("gpt-4.1")
    assert (c.provider, c.input_price, c.cached_price, c.output_price) == ("openai", 2.00, 0.50, 8.00)
    assert c.smaller == ["gpt-4.1-mini", "gpt-5.4-mini", "gpt-6-luna"] and c.status(D(2026, 11, 30)).status == "retiring"
    assert data.current_model("azure/gpt-4.1-mini").provider == "azure-openai"
    luna = data.current_model("gpt-6-luna")         # OpenAI's model page: $0.10 in, $0.01 cached, $0.50 out
    assert (luna.provider, luna.input_price, luna.cached_price, luna.output_price) == ("openai", 0.10, 0.01, 0.50)
    assert "developers.openai.com/api/docs/models/gpt-6-luna" in luna.source and "codersera" not in luna.source
    mini = data.current_model("gpt-5.4-mini")
    assert (mini.input_price, mini.cached_price, mini.output_price) == (0.75, 0.075, 4.50)
    with pytest.raises(UsageError, match="--current-model"):
        data.current_model("gpt-9")
    assert data.gpu_id("rtx4090") == data.gpu_id("4090") == "rtx-4090" and data.gpu_id("H100") == "h100-sxm"
    assert P.stale_warning(data, data.as_of) is None
    assert P.stale_warning(data, D(2027, 2, 28)) is None                    # 90 days
    assert "91 days old" in P.stale_warning(data, D(2027, 3, 1))


def test_docs_tables_module_entry_point():
    import subprocess
    import sys

    cp = subprocess.run([sys.executable, "-m", "finetune_kit.docs_tables", "--check", "--no-examples"],
                        capture_output=True, text=True, cwd=ROOT / "scripts")
    assert cp.returncode == 0, cp.stderr
    assert "match" in cp.stdout
