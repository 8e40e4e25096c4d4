#!/usr/bin/env python3
"""Set up the skill's own Python environment in <skill>/.venv (standard library only)."""

from __future__ import annotations

import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request
from collections import deque
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# setup.py never switches interpreters: it is what makes the environment the others switch to
from finetune_kit import bootstrap, cli  # noqa: E402  (both standard library only)
from finetune_kit.errors import UsageError  # noqa: E402

# torch pinned to a release known to work with the train extra; the CPU build comes from
# PyTorch's CPU index on Linux (PyPI's Linux wheels are CUDA builds of several GB)
TORCH_VERSION = "2.13.0"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
EXTRAS = ("pii", "pii-ner", "train", "eval", "plot", "cluster")
STAMP = ".ft-setup.json"
PROBE = r"""
import importlib, importlib.util, json, sys
mods, do_import = json.loads(sys.argv[1]), sys.argv[2] == "1"
out = {"python": sys.version.split()[0], "executable": sys.executable, "modules": {}}
for m in mods:
    try:
        if do_import:
            mod = importlib.import_module(m)
            out["modules"][m] = {"ok": True, "version": str(getattr(mod, "__version__", "") or "")}
        else:
            out["modules"][m] = {"ok": importlib.util.find_spec(m) is not None, "version": ""}
    except Exception as exc:
        out["modules"][m] = {"ok": False, "error": (type(exc).__name__ + ": " + str(exc))[:300]}
if do_import and out["modules"].get("torch", {}).get("ok"):
    import torch
    out["torch"] = {"version": torch.__version__, "cuda": torch.version.cuda}
print(json.dumps(out))
"""


def build_parser():
    p = cli.make_parser(
        "setup",
        "Create or update the skill's own Python environment, <skill>/.venv (uv when installed, else\n"
        "venv + pip; never the system interpreter, so PEP 668 'externally managed' Pythons are fine).\n"
        "Installs the core packages plus the extras asked for, picks the torch build (NVIDIA GPU ->\n"
        "CUDA, else CPU), checks every import and prints what it did and the environment's size.\n"
        "Run again to add extras; nothing is reinstalled. Afterwards every script switches to this\n"
        "environment by itself: keep calling python3 <skill>/scripts/<verb>.py.\n"
        "Exit codes: 0 ready, 1 installed but an import fails (or --check: something asked for is\n"
        "missing), 2 could not run (no venv module, pip failed, bad arguments).",
        cli.examples_for("setup", "", "--with pii,train --torch cpu", "--check --with train --json"),
        writes_outputs=False)
    p.add_argument("--with", dest="extras", default="", metavar="EXTRAS",
                   help="comma list of extras besides the core: pii (presidio), pii-ner (spaCy English model, "
                        "includes pii), train (torch, transformers, peft, trl), eval (scipy, includes train), "
                        "plot (matplotlib), cluster (datatrove: near_dedup_cluster.py), or all")
    p.add_argument("--torch", choices=["auto", "cpu", "cuda"], default="auto",
                   help=f"torch build for train/eval (default auto: cuda when nvidia-smi sees a GPU, else cpu); "
                        f"torch=={TORCH_VERSION}")
    p.add_argument("--torch-index", metavar="URL",
                   help=f"package index for torch only (default: for cpu on Linux {CPU_INDEX} when it answers, "
                        f"else the default index; 'default' forces pip's configured index; env FT_TORCH_INDEX)")
    p.add_argument("--pip-args", metavar="ARGS",
                   help="extra arguments for every install, e.g. '--index-url https://mirror.example/simple' or "
                        "'--no-index --find-links /srv/wheels' for an air-gapped machine (env FT_PIP_ARGS)")
    p.add_argument("--installer", choices=["auto", "uv", "pip"], default="auto",
                   help="auto (default): uv when it is on PATH, else python -m venv + pip")
    p.add_argument("--check", action="store_true",
                   help="install nothing: report per script what is installed and what is missing "
                        "(exit 1 when something asked for with --with, or the core, is missing)")
    return p


# ----------------------------------------------------------------------------- what to install

def read_requirements(pyproject: Path) -> dict[str, list[str]]:
    """core + each extra's requirement strings from the skill's pyproject.toml (self-references expanded)."""
    if not pyproject.is_file():
        raise UsageError(f"{pyproject} is missing: reinstall the skill (npx clawhub install fine-tuning)")
    text = pyproject.read_text(encoding="utf-8")
    try:
        import tomllib   # Python 3.11+

        proj = tomllib.loads(text)["project"]
        raw = {"core": list(proj.get("dependencies", [])), **proj.get("optional-dependencies", {})}
    except ImportError:
        raw = _read_arrays(text)
    name = re.compile(r"^openclaw-fine-tuning\[([^\]]+)\]$")

    def expand(key: str, seen: tuple[str, ...] = ()) -> list[str]:
        out = []
        for req in raw.get(key, []):
            m = name.match(req.replace(" ", ""))
            if m:
                for sub in m.group(1).split(","):
                    if sub not in seen:
                        out += expand(sub, seen + (key,))
            else:
                out.append(req)
        return list(dict.fromkeys(out))

    return {k: expand(k) for k in raw}


def _read_arrays(text: str) -> dict[str, list[str]]:
    """Python 3.10 (no tomllib): the string arrays of [project] dependencies and optional-dependencies."""
    out: dict[str, list[str]] = {}
    table, key, items = "", None, []
    for line in text.splitlines():
        code = line.split("#", 1)[0].strip()
        if key is None:
            if code.startswith("["):
                table = code.strip("[] ")
                continue
            m = re.match(r"^([\w-]+)\s*=\s*\[(.*)$", code)
            if m and table in ("project", "project.optional-dependencies"):
                if table == "project" and m.group(1) != "dependencies":
                    continue
                key, items, code = ("core" if table == "project" else m.group(1)), [], m.group(2)
            else:
                continue
        items += re.findall(r'"([^"]*)"', code)
        if code.endswith("]"):
            out[key], key = items, None
    return out


def parse_extras(spec: str) -> list[str]:
    wanted = [e.strip() for e in spec.split(",") if e.strip()]
    if "all" in wanted:
        wanted = list(EXTRAS)
    bad = [e for e in wanted if e not in EXTRAS]
    if bad:
        raise UsageError(f"--with {','.join(bad)}: unknown extra; use {', '.join(EXTRAS)} or all")
    out: list[str] = []
    for e in wanted:   # pii-ner brings pii, eval brings train
        out += list(bootstrap.EXTRA_INCLUDES.get(e, ())) + [e]
    return list(dict.fromkeys(out))


def modules_of(extras: list[str]) -> list[str]:
    return [m for e in ["core", *extras] for m in bootstrap.EXTRAS[e][1]]


# ----------------------------------------------------------------------------- environment

def probe(python: Path | str, mods: list[str], do_import: bool) -> dict:
    cp = subprocess.run([str(python), "-c", PROBE, json.dumps(mods), "1" if do_import else "0"],
                        capture_output=True, text=True, env=_clean_env())
    try:
        return json.loads(cp.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise UsageError(f"{python} does not run ({_last_line(cp.stderr) or 'exit ' + str(cp.returncode)}); "
                         f"delete {bootstrap.VENV_DIR} and run setup again") from None


def _clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", bootstrap.MARKER)}
    env.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")   # presidio's import must not go online
    return env


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def installer(choice: str) -> str:
    uv = shutil.which("uv")
    if choice == "uv" and not uv:
        raise UsageError("--installer uv: uv is not on PATH (install it, or use --installer pip)")
    return "uv" if (choice == "uv" or (choice == "auto" and uv)) else "pip"


def run_logged(cmd: list[str], what: str) -> None:
    """Run an install step, its output on stderr (stdout stays free for --json); one line if it fails."""
    print(f"$ {' '.join(shlex.quote(c) for c in cmd)}", file=sys.stderr, flush=True)
    tail: deque[str] = deque(maxlen=30)
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_clean_env())
    except OSError as exc:
        raise UsageError(f"{what}: cannot run {cmd[0]}: {exc}") from exc
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stderr.write(line)
        tail.append(line.rstrip())
    if proc.wait() != 0:
        errs = [t for t in tail if re.match(r"^\s*(ERROR|error|×|The virtual environment was not created)", t)]
        detail = errs[0] if errs else (_last_line("\n".join(tail)) or f"exit {proc.returncode}")
        raise UsageError(f"{what} failed: {' '.join(detail.split())[:400]}")


def create_venv(tool: str) -> bool:
    py = bootstrap.venv_python()
    if py.exists():
        return False
    venv = bootstrap.VENV_DIR
    if tool == "uv":
        run_logged([shutil.which("uv") or "uv", "venv", "--seed", "--python", sys.executable, str(venv)],
                   "uv venv")   # --seed: pip inside, for the extras SKILL.md installs by hand
        return True
    try:
        run_logged([sys.executable, "-m", "venv", str(venv)], "creating the environment")
    except UsageError as exc:
        shutil.rmtree(venv, ignore_errors=True)
        raise UsageError(f"{exc}. This Python cannot make virtual environments: on Debian/Ubuntu "
                         f"`sudo apt install python3-venv` (or install uv), then run setup again") from None
    return True


def install_cmd(tool: str, reqs: list[str], extra_args: list[str]) -> list[str]:
    py = str(bootstrap.venv_python())
    if tool == "uv":
        return [shutil.which("uv") or "uv", "pip", "install", "--python", py, *reqs, *extra_args]
    return [py, "-m", "pip", "install", "--disable-pip-version-check", *reqs, *extra_args]


def nvidia_gpu() -> bool:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return False
    try:
        cp = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return cp.returncode == 0 and "GPU" in cp.stdout


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=8):
            return True
    except Exception:  # noqa: BLE001 - unreachable index: use the default one
        return False


def torch_plan(args) -> dict:
    build = args.torch if args.torch != "auto" else ("cuda" if nvidia_gpu() else "cpu")
    reason = (f"--torch {args.torch}" if args.torch != "auto" else
              "an NVIDIA GPU answered nvidia-smi" if build == "cuda" else "no NVIDIA GPU found (nvidia-smi)")
    index = args.torch_index or os.environ.get("FT_TORCH_INDEX") or None
    if index == "default":
        index = None
    elif index is None and build == "cpu" and platform.system() == "Linux":
        # PyPI's Linux torch wheels bundle CUDA (several GB); PyTorch's CPU index has the small build
        index = CPU_INDEX if _answers(CPU_INDEX + "/torch/") else None
    return {"build": build, "reason": reason, "spec": f"torch=={TORCH_VERSION}", "index": index}


def dir_size(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                st = os.lstat(os.path.join(root, f))
            except OSError:
                continue
            total += getattr(st, "st_blocks", 0) * 512 or st.st_size
    return total


def _human(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


# ----------------------------------------------------------------------------- reports

def script_report(found: dict[str, dict]) -> dict[str, dict]:
    ok = {m for m, r in found.items() if r.get("ok")}
    out = {}
    for script, (needs, opt) in bootstrap.SCRIPTS.items():
        miss = [m for e in needs for m in bootstrap.EXTRAS[e][1] if m not in ok]
        miss_opt = [m for e in opt for m in bootstrap.EXTRAS[e][1] if m not in ok]
        missing_extras = [e for e in needs if any(m not in ok for m in bootstrap.EXTRAS[e][1])]
        out[script] = {"ready": not miss, "missing": miss, "optional_missing": miss_opt,
                       "extras": list(needs), "optional_extras": list(opt), "missing_extras": missing_extras,
                       "setup": bootstrap.setup_command(missing_extras) if miss else None}
    return out


def extras_report(found: dict[str, dict]) -> dict[str, bool]:
    return {e: all(found.get(m, {}).get("ok") for m in mods) for e, (_, mods) in bootstrap.EXTRAS.items()}


def _script_table(scripts: dict[str, dict]) -> str:
    rows = []
    for s, r in scripts.items():
        opt = ", ".join(e for e in r["optional_extras"]
                        if any(m in r["optional_missing"] for m in bootstrap.EXTRAS[e][1]))
        rows.append((f"{s}.py", "yes" if r["ready"] else "no, needs " + ", ".join(r["missing_extras"]),
                     f"--with {opt}" if opt else ""))
    return cli.table(["script", "ready", "options that also need"], rows, "lll")


def check(args, wanted: list[str]) -> cli.Result:
    py = bootstrap.venv_python()
    target = py if py.exists() else Path(sys.executable)
    found = probe(target, modules_of(list(EXTRAS)), do_import=False)["modules"]
    extras = extras_report(found)
    scripts = script_report(found)
    missing = [e for e in ["core", *wanted] if not extras[e]]
    doc = {"venv": str(bootstrap.VENV_DIR), "venv_exists": py.exists(), "python": str(target),
           "extras": extras, "scripts": scripts, "asked": ["core", *wanted], "missing_extras": missing,
           "setup": bootstrap.setup_command(missing) if missing else None}
    where = (f"skill environment {bootstrap.VENV_DIR}" if py.exists()
             else f"no skill environment yet ({bootstrap.VENV_DIR}); checked {target}")
    lines = [where, "extras: " + ", ".join(f"{e} {'yes' if ok else 'no'}" for e, ok in extras.items()), "",
             _script_table(scripts)]
    if missing:
        lines += ["", f"missing: {', '.join(missing)}; set up with: {doc['setup']}"]
    return cli.Result(doc, "\n".join(lines), exit_code=1 if missing else 0, summary={"missing": missing})


# ----------------------------------------------------------------------------- setup

def _stamp() -> dict:
    try:
        return json.loads((bootstrap.VENV_DIR / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def setup(args, wanted: list[str]) -> cli.Result:
    if sys.version_info < (3, 10):
        raise UsageError(f"Python {platform.python_version()} is too old: the skill needs 3.10 or newer")
    started = time.time()
    reqs = read_requirements(bootstrap.SKILL_DIR / "pyproject.toml")
    tool = installer(args.installer)
    extra_args = shlex.split(args.pip_args if args.pip_args is not None else os.environ.get("FT_PIP_ARGS", ""))
    created = create_venv(tool)
    py = bootstrap.venv_python()
    stamp = _stamp()
    steps: list[str] = ["created " + str(bootstrap.VENV_DIR) + f" ({tool})" if created
                        else f"reused {bootstrap.VENV_DIR}"]

    torch_info, torch_first = None, []
    if "train" in wanted:
        plan = torch_plan(args)
        have = stamp.get("torch") or probe(py, ["torch"], do_import=True).get("torch")
        if have and (have["cuda"] is None) == (plan["build"] == "cpu"):
            steps.append(f"torch {have['version']} already installed ({plan['build']} build)")
        else:
            if plan["index"]:   # its own index: a separate step (otherwise one resolver run with the rest)
                run_logged(install_cmd(tool, [plan["spec"]], extra_args + ["--index-url", plan["index"]]),
                           f"installing {plan['spec']}")
            else:
                torch_first = [plan["spec"]]
            steps.append(f"installed {plan['spec']} ({plan['build']}: {plan['reason']}"
                         + (f"; from {plan['index']}" if plan["index"] else "") + ")")
        torch_info = plan

    want_reqs = list(dict.fromkeys(reqs.get("core", []) + [r for e in wanted for r in reqs.get(e, [])]))
    done = set(stamp.get("requirements", [])) if stamp.get("python") == str(py) else set()
    todo = [r for r in want_reqs if r not in done]
    if todo or torch_first:
        run_logged(install_cmd(tool, torch_first + todo, extra_args), "installing " + ", ".join(["core", *wanted]))
        steps.append(f"installed {len(todo)} requirements (core{''.join(', ' + e for e in wanted)})")
    else:
        steps.append("every requirement was already installed")

    verified = probe(py, modules_of(wanted), do_import=True)
    broken = {m: r.get("error", "") for m, r in verified["modules"].items() if not r.get("ok")}
    if not broken:
        all_reqs = sorted(done | set(want_reqs))
        (bootstrap.VENV_DIR / STAMP).write_text(json.dumps(
            {"python": str(py), "extras": sorted(set(stamp.get("extras", [])) | set(wanted)),
             "requirements": all_reqs, "torch": verified.get("torch") or stamp.get("torch")}, indent=1), encoding="utf-8")
    found = probe(py, modules_of(list(EXTRAS)), do_import=False)["modules"]
    size = dir_size(bootstrap.VENV_DIR)
    secs = round(time.time() - started, 1)
    doc = {"venv": str(bootstrap.VENV_DIR), "created": created, "installer": tool, "python": verified["python"],
           "extras": ["core", *wanted], "torch": None, "steps": steps, "failed_imports": broken,
           "versions": {m: r.get("version", "") for m, r in verified["modules"].items() if r.get("ok")},
           "seconds": secs, "size_bytes": size, "installed_extras": extras_report(found),
           "scripts": script_report(found)}
    if torch_info:
        doc["torch"] = {**torch_info, **(verified.get("torch") or {})}
    lines = [*steps, f"python {verified['python']}; took {secs:.0f} s; environment size {_human(size)}"]
    if broken:
        lines.append("FAILED imports: " + "; ".join(f"{m}: {e}" for m, e in broken.items()))
        lines.append(f"repair: delete {bootstrap.VENV_DIR} and run {bootstrap.setup_command(wanted)}")
    else:
        lines.append("ready: keep calling python3 <skill>/scripts/<verb>.py, the scripts switch to this "
                     "environment themselves")
    lines += ["", _script_table(doc["scripts"])]
    return cli.Result(doc, "\n".join(lines), exit_code=1 if broken else 0,
                      summary={"extras": doc["extras"], "failed_imports": sorted(broken), "seconds": secs})


def handle(args) -> cli.Result:
    wanted = parse_extras(args.extras)
    return check(args, wanted) if args.check else setup(args, wanted)


def main(argv=None) -> int:
    return cli.run(build_parser(), handle, argv)


if __name__ == "__main__":
    sys.exit(main())
