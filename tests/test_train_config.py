"""ft-config.yaml: the seed's schema, flag overrides, unknown keys with did-you-mean hints."""

from __future__ import annotations

from pathlib import Path

import pytest

from finetune_kit import train_config as C
from finetune_kit.errors import UsageError

ROOT = Path(__file__).resolve().parent.parent

SEED_STYLE = """
base_model: meta-llama/Llama-3.1-8B-Instruct
method: qlora
data: data/train.jsonl
lora:
  r: 32
  alpha: 64
  dropout: 0.0
  target_modules: [q_proj, v_proj]
training:
  batch_size: 2
  epochs: 2
  learning_rate: 1e-4
  warmup_steps: 10
  max_seq_length: 4096
  save_steps: 50
use_unsloth: true
bfloat16: true
"""


def test_seed_schema_loads(tmp_path):
    f = tmp_path / "ft-config.yaml"
    f.write_text(SEED_STYLE)
    c = C.build(str(f), {})
    assert c.method == "qlora" and c.data.train == "data/train.jsonl" and c.data.validation is None
    assert c.lora.r == 32 and c.lora.target_modules == ["q_proj", "v_proj"]
    assert c.training.learning_rate == 1e-4  # YAML reads "1e-4" as a string; it is coerced
    assert c.training.max_seq_length == 4096 and c.use_unsloth is True and c.bfloat16 is True


def test_flags_override_the_file_and_defaults_fill_the_rest(tmp_path):
    f = tmp_path / "ft-config.yaml"
    f.write_text(SEED_STYLE)
    c = C.build(str(f), {"lr": 3e-4, "r": 8, "grad_accum": 8, "packing": True, "target_modules": "all-linear",
                         "validation": "v.jsonl", "bf16": "auto"})
    assert c.training.learning_rate == 3e-4 and c.lora.r == 8 and c.lora.alpha == 64
    assert c.training.gradient_accumulation_steps == 8 and c.training.packing is True
    assert c.lora.target_modules == "all-linear" and c.data.train == "data/train.jsonl"
    assert c.data.validation == "v.jsonl" and c.bfloat16 == "auto"
    d = C.build(None, {})
    assert (d.method, d.lora.r, d.lora.alpha, d.training.learning_rate, d.training.max_seq_length) == \
        ("lora", 16, 32, 2e-4, 2048)


def test_grad_accum_alias_and_comma_lists(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("training: {grad_accum: 3}\nlora: {target_modules: 'q_proj, k_proj'}\n")
    c = C.build(str(f), {})
    assert c.training.gradient_accumulation_steps == 3 and c.lora.target_modules == ["q_proj", "k_proj"]


@pytest.mark.parametrize("yaml_text,expect", [
    ("training:\n  batch_sz: 4\n", "unknown key 'training.batch_sz' (did you mean 'training.batch_size'?)"),
    ("lora:\n  alpah: 16\n", "did you mean 'lora.alpha'?"),
    ("r: 16\n", "unknown key 'r' (did you mean 'lora.r'?)"),
    ("learning_rate: 1e-4\n", "did you mean 'training.learning_rate'?"),
    ("epocs: 3\n", "did you mean 'training.epochs'?"),
    ("method: full\n", "method: Input should be 'lora' or 'qlora'"),
    ("training:\n  learning_rate: 2e4\n", "training.learning_rate"),
    ("lora:\n  r: 0\n", "lora.r"),
])
def test_bad_configs_are_usage_errors_with_hints(tmp_path, yaml_text, expect):
    f = tmp_path / "c.yaml"
    f.write_text(yaml_text)
    with pytest.raises(UsageError) as ei:
        C.build(str(f), {})
    assert expect in str(ei.value)


def test_unparseable_files(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("training: [unclosed\n")
    with pytest.raises(UsageError, match="not valid YAML at line"):
        C.build(str(f), {})
    f.write_text("- just\n- a list\n")
    with pytest.raises(UsageError, match="top level must be a mapping"):
        C.build(str(f), {})
    with pytest.raises(UsageError, match="not found"):
        C.build(str(tmp_path / "missing.yaml"), {})


def test_relative_paths_fall_back_to_the_config_directory(tmp_path, monkeypatch):
    proj = tmp_path / "proj"
    (proj / "data").mkdir(parents=True)
    (proj / "data" / "train.jsonl").write_text("{}\n")
    (proj / "ft.yaml").write_text("data: {train: data/train.jsonl}\n")
    monkeypatch.chdir(tmp_path)
    c = C.build(str(proj / "ft.yaml"), {})
    assert Path(c.data.train) == proj / "data" / "train.jsonl"


def test_shipped_example_config_is_valid_and_complete():
    c = C.build(str(ROOT / "examples" / "ft-config.yaml"), {})
    text = (ROOT / "examples" / "ft-config.yaml").read_text()
    for key in C.FtConfig.model_fields:
        assert f"{key}:" in text, key
    for key in C.TrainingSection.model_fields:
        assert f"  {key}:" in text, key
    assert c.training.learning_rate == 2e-4
