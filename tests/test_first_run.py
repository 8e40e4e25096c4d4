"""The new user: the skill as ClawHub ships it, and a python3 with none of the skill's packages.

- The published files (.gitignore + .clawhubignore honoured, as in test_openclaw_conformance) are
  copied to a temp dir; the interpreter is a fresh `python -m venv --without-pip` (no site packages).
- Before setup: every script's --help works and prints the real path; a real call exits 2 with one
  stderr line carrying the exact `python3 <skill>/scripts/setup.py [--with X]` command, --debug too.
- Then scripts/setup.py builds <skill>/.venv from this machine's package index (torch==2.13.0, the
  CPU build, from local disk here) and validate, scan_pii and a tiny train_lora --dry-run run through
  the bare interpreter, which hands over to <skill>/.venv (same argv, stdin, exit code).
- Plus in-process regressions for the three paths that crashed on the old code: cli.progress without
  tqdm, the --debug exit code for a missing package, diagnose --plot without matplotlib.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_openclaw_conformance import copy_bundle
from train_support import make_tiny_model, ticket_rows, write_jsonl

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted(p.stem for p in (ROOT / "scripts").glob("*.py"))
ROWS = [{"messages": [{"role": "user", "content": f"Question {i}: how do I reset my password?"},
                      {"role": "assistant", "content": f"Open Settings > Account > Reset ({i})."}]}
        for i in range(12)]
PII_ROW = {"messages": [{"role": "user", "content": "Mail me at jane.doe@example.com please"},
                        {"role": "assistant", "content": "Done."}]}


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "FT_SKILL_REEXEC", "FT_NO_REEXEC")}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def skill(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("first_run") / "fine-tuning"
    dest.mkdir()
    files = copy_bundle(dest)
    assert "scripts/setup.py" in files and "pyproject.toml" in files
    assert not any(f.split("/")[0] in ("tests", "bench", ".ci", ".venv", ".cache") for f in files)
    return dest


@pytest.fixture(scope="module")
def bare(tmp_path_factory) -> Path:
    """A python3 with nothing but the standard library (what a new user's system Python offers us)."""
    d = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(d)], check=True)
    py = d / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    cp = subprocess.run([str(py), "-c", "import importlib.util as u; print([m for m in "
                         "('pydantic','yaml','numpy','tqdm','torch') if u.find_spec(m)])"],
                        capture_output=True, text=True, env=_env())
    assert cp.stdout.strip() == "[]", cp.stdout
    return py


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("first_run_data")
    return {"ok": write_jsonl(d / "ok.jsonl", ROWS),
            "bad": write_jsonl(d / "bad.jsonl", ROWS + [{"messages": []}]),
            "pii": write_jsonl(d / "pii.jsonl", ROWS + [PII_ROW]),
            "tickets": write_jsonl(d / "tickets.jsonl", ticket_rows(16)),
            "log": write_jsonl(d / "trainer_log.jsonl",
                               [{"step": s, "loss": 2.0 / s, "learning_rate": 1e-4} for s in range(1, 30)])}


def run(py: Path, skill: Path, script: str, *args, timeout: int = 900, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(py), str(skill / "scripts" / f"{script}.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=kw.pop("cwd", skill.parent),
                          env=_env(**kw.pop("env", {})), **kw)


def _one_line_setup_error(cp, skill: Path, extra: str | None) -> str:
    assert cp.returncode == 2, (cp.returncode, cp.stdout[-500:], cp.stderr[-2000:])
    assert "Traceback" not in cp.stderr and "unexpected" not in cp.stderr, cp.stderr
    lines = cp.stderr.strip().splitlines()
    assert len(lines) == 1, cp.stderr
    cmd = f"python3 {skill / 'scripts' / 'setup.py'}"
    assert cmd in lines[0], lines[0]
    if extra:
        assert f"{cmd} --with {extra}" in lines[0], lines[0]
    return lines[0]


# ----------------------------------------------------------------------------- before setup

@pytest.mark.parametrize("script", SCRIPTS)
def test_help_works_without_any_package(skill, bare, script):
    cp = run(bare, skill, script, "--help")
    assert cp.returncode == 0, cp.stderr[-2000:]
    tail = cp.stdout.rstrip().splitlines()[-1].strip()
    assert tail.startswith(f"python3 {skill / 'scripts' / script}.py"), tail   # the real path, not {baseDir}


@pytest.mark.parametrize("script,args,extra", [
    ("validate_jsonl", ["{ok}"], None),
    ("validate_jsonl", ["{ok}", "--tokenizer", "none", "--debug"], None),   # old: tqdm traceback, exit 1
    ("prepare_data", ["{ok}", "--output-dir", "{tmp}/prep"], None),
    ("scan_pii", ["{pii}", "--debug"], "pii"),                               # old: 'No module named phonenumbers'
    ("train_lora", ["--base-model", "{tmp}/model", "--train", "{ok}", "--dry-run"], "train"),
    ("should_finetune", ["--failure-mode", "format", "--examples", "200"], None),
    ("diagnose_training", ["{log}", "--debug"], None),
])
def test_real_call_before_setup_says_how_to_set_up(skill, bare, data, tmp_path, script, args, extra):
    fill = {k: str(v) for k, v in data.items()} | {"tmp": str(tmp_path)}
    cp = run(bare, skill, script, *[a.format(**fill) for a in args])
    _one_line_setup_error(cp, skill, extra)
    assert not (tmp_path / "prep").exists()


def test_json_error_is_one_document(skill, bare, data):
    cp = run(bare, skill, "validate_jsonl", data["ok"], "--json")
    line = _one_line_setup_error(cp, skill, None)
    doc = json.loads(cp.stdout)
    assert doc["exit_code"] == 2 and doc["error"] in line


def test_list_entities_is_a_light_path(skill, bare):
    cp = run(bare, skill, "scan_pii", "--list-entities", "--json")   # old: presidio import at module level
    assert cp.returncode == 0, cp.stderr
    doc = json.loads(cp.stdout)
    assert "EMAIL_ADDRESS" in {e["entity"] for e in doc["entities"]}
    assert not any(e["detectable"] for e in doc["entities"])
    assert doc["setup"] == f"python3 {skill / 'scripts' / 'setup.py'} --with pii"


def test_check_before_setup_installs_nothing(skill, bare):
    cp = run(bare, skill, "setup", "--check", "--json")
    assert cp.returncode == 1, cp.stderr
    doc = json.loads(cp.stdout)
    assert doc["venv_exists"] is False and doc["missing_extras"] == ["core"]
    assert doc["scripts"]["validate_jsonl"]["ready"] is False and doc["scripts"]["audit_log"]["ready"] is True
    assert not (skill / ".venv").exists()


def test_setup_rejects_an_unknown_extra(skill, bare):
    cp = run(bare, skill, "setup", "--with", "gpu-magic")
    assert cp.returncode == 2 and cp.stderr.count("\n") == 1 and "pii, pii-ner, train" in cp.stderr


def test_shipped_docs_point_only_at_shipped_files(skill):
    unshipped = re.compile(r"(?<![\w.-])(?:tests|bench|\.ci)/[\w./-]*")
    link = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
    problems = []
    for md in sorted(skill.rglob("*.md")):
        if ".venv" in md.parts:
            continue
        text = md.read_text(encoding="utf-8")
        problems += [f"{md.relative_to(skill)}: {m.group(0)}" for m in unshipped.finditer(text)]
        for m in link.finditer(text):
            target = m.group(1)
            if "://" not in target and not target.startswith("mailto:") and not (md.parent / target).exists():
                problems.append(f"{md.relative_to(skill)}: link to {target}")
    assert not problems, "\n".join(problems)


# ----------------------------------------------------------------------------- setup, then the same calls

@pytest.fixture(scope="module")
def installed(skill, bare):
    """setup.py --with pii,train --torch cpu, as SKILL.md's first-run section tells the agent to run it."""
    t0 = time.time()
    # --no-compile only saves CI time (byte-code is then written on first import)
    cp = run(bare, skill, "setup", "--with", "pii,train", "--torch", "cpu", "--json", timeout=1500,
             env={"FT_PIP_ARGS": "--no-compile"})
    assert cp.returncode == 0, cp.stderr[-4000:]
    doc = json.loads(cp.stdout)
    doc["_wall"] = time.time() - t0
    print(f"\nsetup.py --with pii,train --torch cpu: {doc['_wall']:.0f} s, {doc['size_bytes'] / 1e9:.2f} GB",
          file=sys.stderr)
    return doc


def test_setup_builds_the_environment(skill, installed):
    assert installed["created"] is True and installed["failed_imports"] == {}
    assert Path(installed["venv"]) == skill / ".venv"
    assert installed["torch"]["build"] == "cpu" and installed["torch"]["cuda"] is None
    assert installed["torch"]["version"].startswith("2.13.0")
    assert installed["size_bytes"] > 500e6
    scripts = installed["scripts"]
    assert all(r["ready"] for n, r in scripts.items() if n != "near_dedup_cluster"), scripts
    # the one script whose main path needs an extra not asked for says which and how
    assert scripts["near_dedup_cluster"]["missing_extras"] == ["cluster"]
    assert scripts["near_dedup_cluster"]["setup"].endswith("setup.py --with cluster")


def test_validate_runs_through_the_bare_python(skill, bare, data, installed):
    cp = run(bare, skill, "validate_jsonl", data["ok"], "--json")
    assert cp.returncode == 0, cp.stderr[-2000:]
    assert json.loads(cp.stdout)["files"][0]["valid"] is True
    bad = run(bare, skill, "validate_jsonl", data["bad"], "--json")   # the exit code comes back too
    assert bad.returncode == 1 and json.loads(bad.stdout)["files"][0]["valid"] is False


def test_reexec_passes_argv_stdin_stdout_and_exit_code(skill, bare, installed):
    probe = skill / "scripts" / "probe_reexec.py"   # only in the temp copy: a script that echoes
    probe.write_text("import os, sys\n"
                     "sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))\n"
                     "from finetune_kit import bootstrap\n"
                     "bootstrap.ensure(__file__)\n"
                     "print(sys.prefix, sys.argv[1:], sys.stdin.read().strip(), os.environ.get('FT_SKILL_REEXEC'))\n"
                     "sys.exit(3)\n", encoding="utf-8")
    try:
        cp = run(bare, skill, "probe_reexec", "a b", "--x", input="from stdin\n")
    finally:
        probe.unlink()
    assert cp.returncode == 3, cp.stderr
    assert cp.stdout.strip() == f"{skill / '.venv'} ['a b', '--x'] from stdin None"


def test_scan_pii_runs_through_the_bare_python(skill, bare, data, installed):
    cp = run(bare, skill, "scan_pii", data["pii"], "--nlp", "patterns", "--json")
    assert cp.returncode in (0, 1), cp.stderr[-2000:]
    doc = json.loads(cp.stdout)
    assert doc["summary"]["EMAIL_ADDRESS"]["count"] >= 1


def test_train_dry_run_runs_through_the_bare_python(skill, bare, data, installed, smollm2_dir, tmp_path):
    model = make_tiny_model(tmp_path / "model", smollm2_dir)
    cp = run(bare, skill, "train_lora", "--base-model", model, "--train", data["tickets"], "--dry-run", "--json",
             env={"HF_HUB_OFFLINE": "1"})
    assert cp.returncode == 0, cp.stderr[-3000:]
    assert json.loads(cp.stdout)["ok"] is True


def test_setup_again_is_idempotent_and_check_agrees(skill, bare, installed):
    t0 = time.time()
    cp = run(bare, skill, "setup", "--with", "pii,train", "--torch", "cpu", "--json")
    assert cp.returncode == 0, cp.stderr[-3000:]
    doc = json.loads(cp.stdout)
    assert doc["created"] is False and "every requirement was already installed" in doc["steps"]
    assert any("already installed" in s and "torch" in s for s in doc["steps"])
    assert time.time() - t0 < installed["_wall"]
    chk = run(bare, skill, "setup", "--check", "--with", "pii,train", "--json")
    assert chk.returncode == 0 and json.loads(chk.stdout)["missing_extras"] == []
    nope = run(bare, skill, "setup", "--check", "--with", "pii-ner", "--json")
    assert nope.returncode == 1 and json.loads(nope.stdout)["missing_extras"] == ["pii-ner"]


def test_optional_plot_is_skipped_inside_the_environment(skill, bare, data, installed, tmp_path):
    png = tmp_path / "curve.png"   # setup ran without the plot extra: a warning, not a failure
    cp = run(bare, skill, "diagnose_training", data["log"], "--plot", png, "--json")
    assert cp.returncode in (0, 1), cp.stderr[-2000:]
    doc = json.loads(cp.stdout)
    assert doc["plot"] is None and not png.exists()
    assert f"python3 {skill / 'scripts' / 'setup.py'} --with plot" in doc["plot_skipped"]


# ----------------------------------------------------------------------------- in-process regressions

def test_progress_without_tqdm(monkeypatch):
    from finetune_kit import cli

    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    bar = cli.progress(range(3), desc="x")
    assert list(bar) == [0, 1, 2]
    with cli.progress(total=5) as b:
        b.update(2)
        b.set_postfix(loss=1.0)
        assert b.n == 2
    b.close()


@pytest.mark.parametrize("exc,extra", [(ModuleNotFoundError("No module named 'torch'", name="torch"), "train"),
                                       (ModuleNotFoundError("No module named 'phonenumbers'", name="phonenumbers"),
                                        "pii")])
def test_missing_package_is_exit_2_even_with_debug(capsys, exc, extra):
    from finetune_kit import cli

    parser = cli.make_parser("demo_x", "desc", cli.examples_for("demo_x", "a.jsonl"), writes_outputs=False)

    def handler(args):
        raise exc

    assert cli.run(parser, handler, ["--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1
    assert f"python3 {ROOT / 'scripts' / 'setup.py'} --with {extra}" in err


def test_diagnose_plot_without_matplotlib(monkeypatch, tmp_path, data, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    import diagnose_training

    png = tmp_path / "curve.png"
    code = diagnose_training.main([str(data["log"]), "--plot", str(png), "--json"])
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert code in (0, 1) and doc["plot"] is None and not png.exists()
    assert "--plot skipped" in err and "setup.py --with plot" in doc["plot_skipped"]


def test_setup_reads_pyproject_without_tomllib_too():
    tomllib = pytest.importorskip("tomllib")   # the reference (Python 3.11+)
    import setup

    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    proj = tomllib.loads(text)["project"]
    assert setup._read_arrays(text) == {"core": proj["dependencies"], **proj["optional-dependencies"]}  # Python 3.10
    reqs = setup.read_requirements(ROOT / "pyproject.toml")
    assert "openclaw-fine-tuning" not in " ".join(reqs["eval"]) and set(reqs["train"]) <= set(reqs["eval"])
    assert setup.parse_extras("eval,pii-ner") == ["train", "eval", "pii", "pii-ner"]
