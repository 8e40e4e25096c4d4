"""Does the real OpenClaw CLI load this repo as the `fine-tuning` skill?

The files ClawHub would publish (git-tracked + untracked-not-ignored, minus .gitignore and
.clawhubignore) are copied into a temporary workspace's skills/fine-tuning/ and checked with:
- `openclaw skills info fine-tuning --json`: eligible, source openclaw-workspace, no
  "Skipping invalid skill" on stderr (OpenClaw skips an invalid skill with only that line);
- openclaw's own skill-creator/scripts/quick_validate.py;
- ClawHub's limits: no file > 10 MB, bundle <= 50 MB, no package.json with an `openclaw` key;
- negative controls: a copy with broken frontmatter is skipped, one needing a missing binary is
  ineligible (so these assertions can fail);
- the OpenClaw config patch written by export_adapter.py passes `openclaw config patch --dry-run`
  (schema validation), and a seed-style entry with adapters/tags keys is rejected.

OpenClaw comes from tests/openclaw/install.sh (`make test` runs it; OPENCLAW_DIR points at it).
Without OPENCLAW_DIR, .cache/openclaw is used when present; otherwise the OpenClaw tests fail
when CI is set and are skipped (with the command to install it) on a developer machine.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

MAX_FILE = 10 * 1024 * 1024
MAX_BUNDLE = 50 * 1024 * 1024
PLACEHOLDER_SKILL = """---
name: fine-tuning
description: Placeholder written by the conformance test because the repo has no SKILL.md yet.
metadata: {"openclaw": {"requires": {"bins": ["python3"]}}}
---
# fine-tuning (placeholder)
"""
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _truthy(v: str | None) -> bool:
    return (v or "").strip().lower() not in ("", "0", "false", "no")


def openclaw_bin() -> Path:
    d = os.environ.get("OPENCLAW_DIR")
    hint = "install it with: bash tests/openclaw/install.sh .cache/openclaw (or `make openclaw`)"
    if d:
        b = Path(d) / "bin" / "openclaw"
        if not b.is_file():
            pytest.fail(f"OPENCLAW_DIR={d} has no bin/openclaw; {hint}")
        return b
    b = ROOT / ".cache" / "openclaw" / "bin" / "openclaw"
    if b.is_file():
        return b
    if _truthy(os.environ.get("CI")):
        pytest.fail(f"OpenClaw CLI not installed in CI; {hint}")
    pytest.skip(f"OpenClaw CLI not installed; {hint}")


def _git(*args: str, input: str | None = None) -> str:
    cp = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, input=input)
    if cp.returncode not in (0, 1):   # check-ignore exits 1 when nothing is ignored
        pytest.fail(f"git {' '.join(args)} failed: {cp.stderr.strip()}")
    return cp.stdout


def bundle_files() -> list[str]:
    """Repo-relative paths ClawHub would publish: tracked + untracked-not-ignored, minus ignores."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.fail("the conformance test needs git and a git checkout of the skill")
    listed = _git("ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    files = sorted({f for f in listed if f and (ROOT / f).is_file()})
    excl = ROOT / ".clawhubignore"
    cfg = ["-c", f"core.excludesFile={excl}"] if excl.is_file() else []
    ignored = set(_git(*cfg, "check-ignore", "--no-index", "-z", "--stdin",
                       input="\0".join(files) + "\0").split("\0")) - {""}
    return [f for f in files if f not in ignored]


def copy_bundle(dest: Path) -> list[str]:
    files = bundle_files()
    for f in files:
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, dest / f)
    if not (dest / "SKILL.md").is_file():      # test_repo_has_skill_md fails loudly meanwhile
        (dest / "SKILL.md").write_text(PLACEHOLDER_SKILL)
    return files


def oc_env(base: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCLAW_")}
    for k in ("home", "state", "ws", "bundled"):
        (base / k).mkdir(parents=True, exist_ok=True)
    env.update(HOME=str(base / "home"), OPENCLAW_STATE_DIR=str(base / "state"),
               OPENCLAW_WORKSPACE_DIR=str(base / "ws"), OPENCLAW_BUNDLED_SKILLS_DIR=str(base / "bundled"),
               NO_COLOR="1", FORCE_COLOR="0")
    return env


def run_oc(base: Path, *args: str, timeout: int = 180) -> subprocess.CompletedProcess:
    cp = subprocess.run([str(openclaw_bin()), *args], capture_output=True, text=True, env=oc_env(base),
                        cwd=str(base), timeout=timeout)
    cp.stderr = ANSI.sub("", cp.stderr)
    return cp


def json_out(cp: subprocess.CompletedProcess):
    try:
        return json.loads(cp.stdout)
    except ValueError:
        pytest.fail(f"openclaw printed no JSON (rc {cp.returncode}):\n{cp.stdout[-2000:]}\n{cp.stderr[-2000:]}")


# ----------------------------------------------------------------------------- static checks

def test_repo_has_skill_md():
    p = ROOT / "SKILL.md"
    assert p.is_file(), "SKILL.md is missing: OpenClaw cannot load the skill without it"
    assert "SKILL.md" in bundle_files(), "SKILL.md is ignored by .gitignore/.clawhubignore"


def test_clawhub_limits():
    files = bundle_files()
    assert files, "empty bundle"
    sizes = {f: (ROOT / f).stat().st_size for f in files}
    big = {f: s for f, s in sizes.items() if s > MAX_FILE}
    assert not big, f"files over ClawHub's 10 MB limit: {big}"
    total = sum(sizes.values())
    assert total <= MAX_BUNDLE, f"bundle is {total / 1e6:.1f} MB, over ClawHub's 50 MB limit"
    for f in files:
        if Path(f).name == "package.json":
            data = json.loads((ROOT / f).read_text(encoding="utf-8"))
            assert "openclaw" not in data, f"{f} has an 'openclaw' key (ClawHub treats it as a plugin)"
    leaked = [f for f in files if f.split("/")[0] in (".venv", ".cache", "demo-output", ".git", "tests")]
    assert not leaked, f"bundle contains files that must stay out: {leaked[:5]}"
    assert any(f.startswith("scripts/") and f.endswith(".py") for f in files)


# ----------------------------------------------------------------------------- real OpenClaw

@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    openclaw_bin()   # fail/skip before copying anything
    base = tmp_path_factory.mktemp("openclaw")
    skill = base / "ws" / "skills" / "fine-tuning"
    skill.mkdir(parents=True)
    copy_bundle(skill)
    return base, skill


def test_openclaw_loads_the_skill(workspace):
    base, skill = workspace
    cp = run_oc(base, "skills", "info", "fine-tuning", "--json")
    assert "Skipping invalid skill" not in cp.stderr, cp.stderr
    info = json_out(cp)
    assert cp.returncode == 0, info
    assert info["name"] == "fine-tuning"
    assert info["source"] == "openclaw-workspace"
    assert info["eligible"] is True, info.get("missing")
    assert info["disabled"] is False and info["modelVisible"] is True
    assert Path(info["baseDir"]).resolve() == skill.resolve()
    assert "python3" in info["requirements"]["bins"] and info["missing"]["bins"] == []
    desc = info["description"]
    assert desc and len(desc) < 160 and "<" not in desc and ">" not in desc


def test_quick_validate_accepts_the_skill(workspace):
    base, skill = workspace
    qv = Path(openclaw_bin()).parent.parent / "node_modules" / "openclaw" / "skills" / "skill-creator" / \
        "scripts" / "quick_validate.py"
    assert qv.is_file(), f"openclaw no longer ships {qv}"
    cp = subprocess.run([sys.executable, str(qv), str(skill)], capture_output=True, text=True)
    assert cp.returncode == 0 and "valid" in cp.stdout.lower(), cp.stdout + cp.stderr


def test_broken_or_ineligible_copies_are_reported(workspace, tmp_path):
    """Negative control: the checks above would catch a broken SKILL.md."""
    _, good = workspace
    base = tmp_path / "neg"
    skills = base / "ws" / "skills"
    text = (good / "SKILL.md").read_text(encoding="utf-8")
    front, sep, body = text.partition("\n---")
    assert sep, "SKILL.md has no frontmatter block"
    broken = "\n".join(ln for ln in front.splitlines() if not ln.startswith("description:")) + sep + body
    (skills / "fine-tuning").mkdir(parents=True)
    (skills / "fine-tuning" / "SKILL.md").write_text(broken, encoding="utf-8")
    nobin = re.sub(r"^name:.*$", "name: fine-tuning-nobin", text, count=1, flags=re.M)
    nobin = nobin.replace('"python3"', '"no-such-binary-for-ft-test"', 1)
    assert nobin != text and "no-such-binary-for-ft-test" in nobin
    (skills / "fine-tuning-nobin").mkdir()
    (skills / "fine-tuning-nobin" / "SKILL.md").write_text(nobin, encoding="utf-8")

    cp = run_oc(base, "skills", "list", "--json")
    listed = {s["name"]: s for s in json_out(cp)["skills"] if s.get("source") == "openclaw-workspace"}
    assert "fine-tuning" not in listed
    assert re.search(r"Skipping invalid skill: file=.*fine-tuning/SKILL\.md", cp.stderr), cp.stderr
    assert listed["fine-tuning-nobin"]["eligible"] is False
    assert listed["fine-tuning-nobin"]["missing"]["bins"] == ["no-such-binary-for-ft-test"]
    qv = Path(openclaw_bin()).parent.parent / "node_modules" / "openclaw" / "skills" / "skill-creator" / \
        "scripts" / "quick_validate.py"
    bad = subprocess.run([sys.executable, str(qv), str(skills / "fine-tuning")], capture_output=True, text=True)
    assert bad.returncode == 1 and "description" in bad.stdout.lower()


def test_export_config_patch_passes_openclaw_schema(tmp_path):
    from finetune_kit import export

    base = tmp_path / "cfg"
    patch, text = export.openclaw_patch(name="ticket-router", host="http://127.0.0.1:11434", context=8192,
                                        adapter_path="/srv/export/adapter", base_spec="smollm2-135m",
                                        tags=["fine-tuned", "lora"])
    good = tmp_path / "openclaw.patch.json5"
    good.write_text(text)
    cp = run_oc(base, "config", "patch", "--file", str(good), "--dry-run")
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert "Dry run successful" in cp.stdout + cp.stderr
    # the seed's shape (adapters with path/weight, tags on the model) is not OpenClaw's schema
    seed = json.loads(json.dumps(patch))
    entry = seed["models"]["providers"]["ollama"]["models"][0]
    entry["adapters"] = [{"path": "/srv/export/adapter", "weight": 1.0}]
    entry["tags"] = ["fine-tuned"]
    bad = tmp_path / "seed.patch.json5"
    bad.write_text(json.dumps(seed))
    cp = run_oc(base, "config", "patch", "--file", str(bad), "--dry-run")
    assert cp.returncode != 0 and "Unrecognized key" in cp.stdout + cp.stderr, cp.stdout + cp.stderr
