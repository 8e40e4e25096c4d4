"""Docs are part of the product: SKILL.md and the guides must match the scripts that exist."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
GUIDES = ["providers.md", "data-prep.md", "training.md", "evaluation.md", "costs.md", "compliance.md"]
ALLOWED_KEYS = {"name", "description", "homepage", "license", "allowed-tools", "user-invocable",
                "disable-model-invocation", "command-dispatch", "command-tool", "command-arg-mode", "metadata"}
ENTRY_SCRIPTS = sorted(p for p in (ROOT / "scripts").glob("*.py"))
CMD = re.compile(r"python3 \{baseDir\}/scripts/([a-z_]+)\.py((?:[^\n`|]|\\\n)*)")


def _frontmatter() -> dict:
    text = (ROOT / "SKILL.md").read_text(encoding="utf-8")
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n", 2)[1])


def _parser(script: Path):
    spec = importlib.util.spec_from_file_location(f"_entry_{script.stem}", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.build_parser()


def _options(parser) -> set[str]:
    opts = set()
    for a in parser._actions:
        opts.update(a.option_strings)
        if getattr(a, "choices", None) and isinstance(a.choices, dict):  # subcommands
            for sub in a.choices.values():
                opts |= _options(sub)
    return opts


def _docs() -> dict[str, str]:
    files = ["SKILL.md", "README.md", "loop.md"] + GUIDES
    return {f: (ROOT / f).read_text(encoding="utf-8") for f in files if (ROOT / f).exists()}


def test_frontmatter_is_what_openclaw_accepts():
    fm = _frontmatter()
    assert set(fm) <= ALLOWED_KEYS, set(fm) - ALLOWED_KEYS
    assert fm["name"] == "fine-tuning"
    desc = fm["description"]
    assert len(desc) < 160 and "<" not in desc and ">" not in desc
    assert fm["metadata"] == {"openclaw": {"requires": {"bins": ["python3"]}}}


def test_skill_md_is_short_and_links_every_guide():
    text = (ROOT / "SKILL.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) < 500
    for g in GUIDES:
        assert (ROOT / g).is_file(), f"{g} missing"
        assert f"]({g})" in text, f"SKILL.md does not link {g}"


def test_every_script_is_documented_in_skill_md_and_every_cited_script_exists():
    text = (ROOT / "SKILL.md").read_text(encoding="utf-8")
    for s in ENTRY_SCRIPTS:
        assert f"scripts/{s.name}" in text, f"SKILL.md does not mention {s.name}"
    for name, doc in _docs().items():
        for m in re.finditer(r"scripts/([a-z_]+\.py)", doc):
            assert (ROOT / "scripts" / m.group(1)).is_file(), f"{name} cites missing scripts/{m.group(1)}"


@pytest.mark.parametrize("script", ENTRY_SCRIPTS, ids=lambda p: p.stem)
def test_help_ends_with_examples(script):
    lines = _parser(script).format_help().rstrip().splitlines()
    idx = max(i for i, line in enumerate(lines) if line.strip() == "examples:")
    tail = lines[idx + 1:]
    assert 2 <= len(tail) <= 4 and all(t.strip().startswith(f"python3 {ROOT}/scripts/{script.name}")
                                       for t in tail)


def test_flags_cited_in_docs_exist():
    parsers = {s.stem: _options(_parser(s)) for s in ENTRY_SCRIPTS}
    problems = []
    for name, doc in _docs().items():
        for m in CMD.finditer(doc):
            script, rest = m.group(1), m.group(2)
            if script not in parsers:
                problems.append(f"{name}: unknown script {script}.py")
                continue
            for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", rest):
                if flag not in parsers[script]:
                    problems.append(f"{name}: {script}.py has no flag {flag}")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------- cross-references between the guides

LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")
SECTION_WORD = re.compile(r"§\s*(\d+)|\bsection (\d+)\b", re.IGNORECASE)


def _strip_code(text: str) -> str:
    """Markdown without fenced and inline code (a '§' or '#' there is not a reference)."""
    text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    return re.sub(r"`[^`\n]*`", "", text)


def _slug(heading: str) -> str:
    """GitHub's heading anchor: lowercase, punctuation other than '-' and '_' dropped, spaces to '-'."""
    h = re.sub(r"`", "", heading.strip().lower())
    h = re.sub(r"[^\w\- ]", "", h)
    return h.replace(" ", "-")


def _headings(text: str) -> dict[str, str]:
    """{anchor: heading text} of a Markdown file (fenced code left out)."""
    out: dict[str, str] = {}
    for line in re.sub(r"```.*?```", "", text, flags=re.DOTALL).splitlines():
        m = re.match(r"#{1,6} (.+)", line)
        if m:
            out.setdefault(_slug(m.group(1)), m.group(1).strip())
    return out


def _cross_refs() -> list[tuple[str, str, str]]:
    """(file, link text, target) of every local link in SKILL.md and the guides."""
    refs = []
    for name in ["SKILL.md", *GUIDES, "loop.md"]:
        for m in LINK.finditer(_strip_code((ROOT / name).read_text(encoding="utf-8"))):
            if not re.match(r"[a-z]+:", m.group(2)):
                refs.append((name, m.group(1), m.group(2)))
    return refs


def test_guide_links_and_section_numbers_resolve():
    problems = []
    for name, text, target in _cross_refs():
        path, _, anchor = target.partition("#")
        dest = ROOT / (path or name)
        if not dest.is_file():
            problems.append(f"{name}: [{text}]({target}): no file {path}")
            continue
        if not anchor:
            continue
        heads = _headings(dest.read_text(encoding="utf-8"))
        if anchor not in heads:
            problems.append(f"{name}: [{text}]({target}): no heading with anchor #{anchor} in {dest.name}")
            continue
        num = SECTION_WORD.search(text)
        if num and not heads[anchor].startswith(f"{num.group(1) or num.group(2)}."):
            problems.append(f"{name}: [{text}]({target}) names a section number but the heading is "
                            f"'{heads[anchor]}'")
    assert not problems, "\n".join(problems)


def test_section_references_are_links_so_they_can_be_checked():
    problems = []
    for name in ["SKILL.md", *GUIDES, "loop.md"]:
        text = LINK.sub("", _strip_code((ROOT / name).read_text(encoding="utf-8")))
        for m in SECTION_WORD.finditer(text):
            line = text[:m.start()].count("\n") + 1
            problems.append(f"{name}: '{m.group(0)}' (around line {line}) is a bare section number: write it as "
                            f"a link, e.g. [section 9](#9-audit-log), so this test can check where it points")
    assert not problems, "\n".join(problems)


def test_the_cross_reference_check_can_fail(tmp_path):
    heads = _headings("# T\n## 9. Audit log\n## 2. `scan_pii.py`\n")
    assert "9-audit-log" in heads and "2-scan_piipy" in heads
    assert SECTION_WORD.search("see section 8") and not SECTION_WORD.search("a section on names")
