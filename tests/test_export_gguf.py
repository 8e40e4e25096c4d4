"""export_adapter.py --gguf: the adapter as a llama.cpp LoRA GGUF, checked against PEFT.

The converter is llama.cpp's own convert_lora_to_gguf.py from the llama-cpp-python 0.3.36 source
distribution (`make test` downloads it into .cache/llama-cpp; set LLAMA_CPP_DIR to use another
llama.cpp). Building llama.cpp itself takes too long for CI, so generation through llama.cpp is
tested only where llama-cpp-python is installed (bench/serve_gguf.py measures it on the demo).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import ROOT, run_json, run_script
from test_export import variant  # the same adapter-config variants as the export tests

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")

from finetune_kit import export, export_gguf  # noqa: E402
from finetune_kit.errors import UsageError  # noqa: E402

pytestmark = pytest.mark.slow


def _find_converter() -> str | None:
    for c in [os.environ.get("LLAMA_CPP_DIR"), *sorted((ROOT / ".cache" / "llama-cpp").glob("*.tar.gz"))]:
        if c:
            try:
                return str(export_gguf.find_llama_cpp(str(c)).root)
            except UsageError:
                continue
    return None


LLAMA_CPP = _find_converter()
needs_converter = pytest.mark.skipif(LLAMA_CPP is None, reason="llama.cpp converter not downloaded: make llama-cpp")


@pytest.fixture(scope="module")
def adapter_dir(smollm2_dir, tmp_path_factory):
    """A real LoRA adapter on SmolLM2 (r=4 on q/k/v/down, random B so it changes the model)."""
    d = tmp_path_factory.mktemp("gguf-adapters") / "router"
    base = transformers.AutoModelForCausalLM.from_pretrained(str(smollm2_dir), dtype=torch.float32)
    torch.manual_seed(0)
    cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "down_proj"],
                          init_lora_weights=False, task_type="CAUSAL_LM")
    peft.get_peft_model(base, cfg).save_pretrained(str(d))
    transformers.AutoTokenizer.from_pretrained(str(smollm2_dir)).save_pretrained(str(d))
    return d


def _gguf_tensor(reader, name):
    t = next(t for t in reader.tensors if t.name == name)
    return export_gguf._tensor_array(t)


def _peft_delta(adapter: Path, module: str, scale: float):
    from safetensors.torch import load_file

    w = load_file(str(adapter / "adapter_model.safetensors"))
    a = w[f"base_model.model.{module}.lora_A.weight"].float()
    b = w[f"base_model.model.{module}.lora_B.weight"].float()
    return (scale * (b @ a)).numpy()


def _row_order(gguf_rows, hf_rows):
    """Which HF row each GGUF row is (the base GGUF vs the HF weights dequantized from it)."""
    import numpy as np

    index = {hf_rows[i].tobytes(): i for i in range(hf_rows.shape[0])}
    order = [index.get(gguf_rows[i].astype(np.float32).tobytes()) for i in range(gguf_rows.shape[0])]
    assert None not in order, "base GGUF rows are not a permutation of the HF weights"
    return order


# ----------------------------------------------------------------------------- conversion (real converter)

@needs_converter
def test_gguf_export_writes_adapter_gguf_and_modelfile(adapter_dir, smollm2_dir, tmp_path):
    out = tmp_path / "export"
    before = sorted((p.name, p.stat().st_mtime_ns) for p in adapter_dir.iterdir())
    code, doc = run_json("export_adapter", adapter_dir, "--output-dir", out, "--gguf", "--llama-cpp", LLAMA_CPP,
                         "--gguf-outtype", "f32")
    assert code == 0, doc
    assert "adapter.gguf" in doc["files"] and (out / "adapter.gguf").is_file()
    lines = (out / "Modelfile").read_text().splitlines()
    assert "ADAPTER ./adapter.gguf" in lines
    from_ = next(ln for ln in lines if ln.startswith("FROM "))[5:]
    assert from_.endswith("SmolLM2-135M-Instruct.Q4_1.gguf") and Path(from_).is_file()
    g = doc["gguf"]
    assert g["tensor_check"]["passed"] and g["tensor_check"]["tensors_checked"] == 30 * 4
    assert g["tensor_check"]["rope_permuted"] == 30 * 2          # q and k rows in llama.cpp's rotary order
    assert "Q4_1" in g["pair_with"]
    assert doc["ollama"]["ready"] and doc["ollama"]["adapter"] == "./adapter.gguf"
    # no local paths leak into the GGUF metadata
    r = gguf.GGUFReader(str(out / "adapter.gguf"))
    meta = json.dumps({k: str(export_gguf._field(r, k)) for k in r.fields if not k.startswith("GGUF.")})
    assert str(smollm2_dir) not in meta and "/work/" not in meta and str(tmp_path) not in meta
    assert export_gguf._field(r, "adapter.lora.alpha") == 8.0
    # independent check of one q and one v update against the base GGUF's own row order:
    # llama.cpp must apply B A to exactly the rows of blk.0.attn_q.weight that q_proj's rows became
    base = gguf.GGUFReader(from_)
    from safetensors.numpy import load_file

    hf = load_file(str(smollm2_dir / "model.safetensors"))
    for mod, gname in (("model.layers.0.self_attn.q_proj", "blk.0.attn_q.weight"),
                       ("model.layers.3.self_attn.v_proj", "blk.3.attn_v.weight"),
                       ("model.layers.5.mlp.down_proj", "blk.5.ffn_down.weight")):
        order = _row_order(_gguf_tensor(base, gname), hf[mod + ".weight"])
        want = _peft_delta(adapter_dir, mod, 8 / 4)[order]
        got = 8 / 4 * (_gguf_tensor(r, gname + ".lora_b") @ _gguf_tensor(r, gname + ".lora_a"))
        assert abs(got - want).max() <= 1e-6 * max(1.0, abs(want).max()), mod
    readme = (out / "README.md").read_text()
    assert "### GGUF adapter (llama.cpp)" in readme and "--lora" in readme
    assert sorted((p.name, p.stat().st_mtime_ns) for p in adapter_dir.iterdir()) == before


@needs_converter
def test_rslora_and_alpha_pattern_are_folded(adapter_dir, tmp_path):
    rs = variant(adapter_dir, tmp_path / "rs", use_rslora=True, alpha_pattern={"v_proj": 32})
    a = export.read_adapter(str(rs))
    base = export.resolve_base(a, None)
    out = tmp_path / "rs.gguf"
    res = export_gguf.convert_adapter(export_gguf.find_llama_cpp(LLAMA_CPP), a, base, out, outtype="f32")
    assert res["scale_folded_into_lora_b"] and res["tensor_check"]["passed"]
    r = gguf.GGUFReader(str(out))
    alpha = export_gguf._field(r, "adapter.lora.alpha")
    # llama.cpp applies alpha/rank; PEFT's rsLoRA applies alpha/sqrt(rank) (32/sqrt(4) for v_proj)
    for gname, mod, peft_scale in (("blk.2.attn_v.weight", "model.layers.2.self_attn.v_proj", 32 / 2),
                                   ("blk.2.ffn_down.weight", "model.layers.2.mlp.down_proj", 8 / 2)):
        got = alpha / 4 * (_gguf_tensor(r, gname + ".lora_b") @ _gguf_tensor(r, gname + ".lora_a"))
        want = _peft_delta(rs, mod, peft_scale)
        assert abs(got - want).max() <= 1e-5 * abs(want).max()
    assert rs.joinpath("adapter_config.json").read_text().count('"use_rslora": true') == 1  # input untouched


@needs_converter
def test_tensor_check_catches_a_wrong_scale(adapter_dir, tmp_path):
    out = tmp_path / "a.gguf"
    a = export.read_adapter(str(adapter_dir))
    export_gguf.convert_adapter(export_gguf.find_llama_cpp(LLAMA_CPP), a, export.resolve_base(a, None), out,
                                outtype="f16")
    wrong = export.read_adapter(str(variant(adapter_dir, tmp_path / "wrong", lora_alpha=16)))
    res = export_gguf.verify_adapter_gguf(out, wrong, outtype="f16")
    assert not res["passed"] and "relative error" in res["problem"]
    assert export_gguf.verify_adapter_gguf(out, a, outtype="f16")["passed"]


@needs_converter
def test_dora_needs_merge_for_gguf(adapter_dir, tmp_path):
    dora = variant(adapter_dir, tmp_path / "dora", use_dora=True)
    cp = run_script("export_adapter", dora, "--output-dir", tmp_path / "e", "--gguf", "--llama-cpp", LLAMA_CPP)
    assert cp.returncode == 2 and "--merge --gguf" in cp.stderr and "Traceback" not in cp.stderr
    assert not (tmp_path / "e").exists()


@needs_converter
def test_merge_gguf_holds_base_plus_update(adapter_dir, smollm2_dir, tmp_path):
    out = tmp_path / "export"
    code, doc = run_json("export_adapter", adapter_dir, "--output-dir", out, "--gguf", "--merge", "--gguf-quant",
                         "f16", "--llama-cpp", LLAMA_CPP)
    assert code == 0, doc
    mg = doc["merge"]["gguf"]
    assert mg["type"] == "f16" and {"merged.gguf", "Modelfile.merged"} <= set(doc["files"])
    assert mg["template_check"]["jinja_matches"] and mg["template_check"]["stop_covers_eog"]
    lines = (out / "Modelfile.merged").read_text().splitlines()
    assert "FROM ./merged.gguf" in lines and not any(ln.startswith("ADAPTER") for ln in lines)
    # blk.4.attn_v.weight (no rotary reordering) == base v_proj + scale * B A, to f16/bf16 rounding
    from safetensors.numpy import load_file

    r = gguf.GGUFReader(str(out / "merged.gguf"))
    assert export_gguf._field(r, "general.architecture") == "llama"
    w = load_file(str(smollm2_dir / "model.safetensors"))["model.layers.4.self_attn.v_proj.weight"]
    want = w + _peft_delta(adapter_dir, "model.layers.4.self_attn.v_proj", 8 / 4)
    got = _gguf_tensor(r, "blk.4.attn_v.weight")
    assert abs(got - want).max() <= 0.01 * abs(want).max()
    assert abs(got - w).max() > 10 * abs(got - want).max()      # the update is really in there


# ----------------------------------------------------------------------------- finding the converter

def test_missing_converter_exits_2_with_the_setup_line(adapter_dir, tmp_path):
    env = {"LLAMA_CPP_DIR": "", "FT_CACHE_DIR": str(tmp_path / "cache"), "HOME": str(tmp_path / "home")}
    cp = run_script("export_adapter", adapter_dir, "--output-dir", tmp_path / "e", "--gguf", env=env)
    assert cp.returncode == 2 and len(cp.stderr.strip().splitlines()) == 1, cp.stderr
    assert "pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36" in cp.stderr
    assert not (tmp_path / "e").exists()
    for args in (["--gguf", "--llama-cpp", tmp_path / "nowhere"], ["--gguf", "--llama-cpp", tmp_path],
                 ["--llama-cpp", tmp_path]):
        cp = run_script("export_adapter", adapter_dir, "--output-dir", tmp_path / "e", *args, env=env)
        assert cp.returncode == 2 and "Traceback" not in cp.stderr and len(cp.stderr.strip().splitlines()) == 1


def test_find_llama_cpp_in_a_sdist_archive(tmp_path, monkeypatch):
    """A pip-downloaded sdist (.tar.gz) is unpacked once, converter parts only."""
    import tarfile

    src = tmp_path / "llama_cpp_python-9.9.9" / "vendor" / "llama.cpp"
    (src / "gguf-py" / "gguf").mkdir(parents=True)
    (src / "convert_lora_to_gguf.py").write_text("print('x')\n")
    (src / "gguf-py" / "gguf" / "__init__.py").write_text("")
    (src / "ggml.c").write_text("int big;\n")
    dl = tmp_path / "home" / ".cache" / "llama-cpp"
    dl.mkdir(parents=True)
    with tarfile.open(dl / "llama_cpp_python-9.9.9.tar.gz", "w:gz") as tf:
        tf.add(tmp_path / "llama_cpp_python-9.9.9", arcname="llama_cpp_python-9.9.9")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("LLAMA_CPP_DIR", raising=False)
    found = export_gguf.find_llama_cpp(None)
    assert found.root == (tmp_path / "cache" / "llama.cpp" / "llama_cpp_python-9.9.9" / "vendor" / "llama.cpp")
    assert (found.root / "gguf-py" / "gguf" / "__init__.py").is_file() and not (found.root / "ggml.c").exists()
    assert export_gguf.find_llama_cpp(None).origin == "cache"     # second time: the unpacked copy


# ----------------------------------------------------------------------------- template vs the GGUF's own

def test_modelfile_template_equals_the_gguf_chat_template(smollm2_dir):
    from finetune_kit import models

    ref = models.resolve("smollm2-135m")
    path = Path(ref.path) / ref.gguf_file
    tmpl = export.detect_template(transformers.AutoTokenizer.from_pretrained(str(smollm2_dir)))
    res = export_gguf.check_gguf_template(path, tmpl)
    assert res["checked"] == 3 and res["jinja_matches"] and res["stop_covers_eog"]
    assert res["eog_tokens"] == ["<|im_end|>"]
    # without the SYSTEM line the Modelfile would drop the GGUF template's default system prompt
    no_sys = export_gguf.check_gguf_template(path, {**tmpl, "default_system": None})
    assert no_sys["jinja_matches"] is False and "You are a helpful AI" in no_sys["mismatch"]["gguf_jinja"]
    no_stop = export_gguf.check_gguf_template(path, {**tmpl, "stop": ["<|im_start|>"]})
    assert not no_stop["stop_covers_eog"]
    assert {w.code for w in export_gguf.template_warnings(no_stop)} == {"stop_misses_gguf_eog"}
    # Llama-3 style template text in the same Modelfile family would not match ChatML
    llama3 = export_gguf.check_gguf_template(path, {**tmpl, "family": "llama3", "stop": ["<|eot_id|>"]})
    assert llama3["jinja_matches"] is False


# ----------------------------------------------------------------------------- served by llama.cpp

@needs_converter
def test_llama_cpp_serves_the_adapter_like_peft(adapter_dir, smollm2_dir, tmp_path):
    """Greedy continuations from llama.cpp (F32 base GGUF + adapter.gguf) equal PEFT's."""
    llama_cpp = pytest.importorskip("llama_cpp")
    ll = export_gguf.find_llama_cpp(LLAMA_CPP)
    base = tmp_path / "base.f32.gguf"
    import sys

    export_gguf._run_converter([sys.executable, str(ll.root / export_gguf.HF_CONVERTER), str(smollm2_dir),
                                "--outfile", str(base), "--outtype", "f32"], "convert_hf_to_gguf")
    a = export.read_adapter(str(adapter_dir))
    out = tmp_path / "a.gguf"
    export_gguf.convert_adapter(ll, a, export.resolve_base(a, None), out, outtype="f32")
    tok = transformers.AutoTokenizer.from_pretrained(str(smollm2_dir))
    pm = peft.PeftModel.from_pretrained(
        transformers.AutoModelForCausalLM.from_pretrained(str(smollm2_dir), dtype=torch.float32), str(adapter_dir))
    pm.eval()
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
               for q in ("Route: I was charged twice", "What is the capital of France?", "Reset my password")]
    llm = llama_cpp.Llama(model_path=str(base), lora_path=str(out), n_ctx=512, n_threads=2, seed=0, verbose=False,
                          logits_all=True)
    same = 0
    for p in prompts:
        ids = tok(p, add_special_tokens=False, return_tensors="pt")["input_ids"]
        toks = llm.tokenize(p.encode(), add_bos=True, special=True)
        assert toks == ids[0].tolist()                       # llama.cpp's tokenizer agrees with HF's
        with torch.no_grad():
            ref = pm.generate(input_ids=ids, max_new_tokens=8, do_sample=False)[0, ids.shape[1]:].tolist()
            want = pm(input_ids=ids).logits[0, -1].numpy()
            with pm.disable_adapter():
                plain = pm(input_ids=ids).logits[0, -1].numpy()
        llm.reset()
        llm.eval(toks)
        got_logits = llm.scores[llm.n_tokens - 1]
        effect = abs(want - plain).max()
        assert effect > 0.5 and abs(got_logits - want).max() < 0.05 * effect   # the adapter is applied, exactly
        llm.reset()
        got = llm.create_completion(toks, max_tokens=8, temperature=0.0, top_k=1, repeat_penalty=1.0)
        llm.reset()
        same += tok.decode(ref, skip_special_tokens=True).strip() == got["choices"][0]["text"].strip()
    assert same == len(prompts)
