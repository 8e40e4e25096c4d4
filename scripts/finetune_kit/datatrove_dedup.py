"""Near-duplicate removal past one machine: prepare_data's near-dup pass on datatrove's MinHash.

For corpora one machine cannot hash in reasonable time, the same kind of pass (word 3-shingles of
the conversation without its system prompt, MinHash, LSH bands) runs on datatrove
(https://github.com/huggingface/datatrove), which shards every stage over tasks on a local
process pool, a Slurm cluster or a Ray cluster. Its result is a *removed list* - one JSON line
``{"source", "line", "duplicate_of", "cluster", "detected_by"}`` per row to drop - that
``prepare_data.py --near-dup-removed FILE`` consumes instead of running its own near-dup search
(exact dedup, split, the leakage re-check and writing stay prepare_data's).

The four datatrove stages (``pipelines``):

1. ``JsonlReader`` (our adapter turns each JSONL row into its near-dup text through the same
   readers/converters prepare_data uses) -> ``MinhashDedupSignature``;
2. ``MinhashDedupBuckets``: one task per LSH band finds the pairs that share the band;
3. ``MinhashDedupCluster``: union-find over the pairs, keeps one row per cluster;
4. ``JsonlReader`` -> ``MinhashDedupFilter``: writes the removed rows (ids only) and the kept
   members of each cluster (so every removed row can name the row it duplicates).

Differences from prepare_data's own pass (documented in data-prep.md): datatrove does not verify
candidates with the exact Jaccard (a pair sharing one band of 8 MinHash values is a duplicate;
at J = 0.85 the band setting finds 99.4 % of the pairs, and pairs well below the threshold are
occasionally removed), it keeps one row per *cluster* (not the first occurrence), rows under 3 words
have no shingles and are never near duplicates, and only JSONL inputs are read. Needs the
``cluster`` extra: ``pip install 'openclaw-fine-tuning[cluster]'`` (datatrove, orjson).
"""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path
from typing import Any

from .dedup import NUM_PERM, SEED, SHINGLE, lsh_params
from .errors import UsageError, require

_WORD = re.compile(r"\w+")
EXECUTORS = ("local", "slurm", "ray")


def near_text_of_row(obj: Any) -> str:
    """The near-dup text prepare_data compares, for one raw JSONL row ("" when it cannot convert)."""
    from . import prepare
    from .readers import Unconvertible, convert_row, detect_row_format

    fmt = detect_row_format(obj)
    if fmt is None:
        return ""
    try:
        return prepare.near_text(convert_row(fmt, obj, {}, "0"))
    except (Unconvertible, ValueError, TypeError, KeyError):
        return ""


def _adapter(self, data: dict, path: str, id_in_file: int | str) -> dict:
    """datatrove reader adapter: the row's near-dup text; id = ``file:line`` (1-based line)."""
    line = int(id_in_file) + 1
    name = Path(path).name
    return {"text": near_text_of_row(data), "id": f"{name}:{line}", "metadata": {"source": name, "line": line}}


def _ids_only(self, document) -> dict:
    """datatrove writer adapter: no text in the outputs, only which row and which cluster."""
    md = document.metadata
    return {"source": md.get("source"), "line": md.get("line"), "cluster": md.get("minhash_cluster_id", -1)}


def _in_cluster(document) -> bool:
    return document.metadata.get("minhash_cluster_id", -1) != -1


def _word_tokenizer():
    from datatrove.utils.word_tokenizers import WordTokenizer

    class Words(WordTokenizer):
        """prepare_data's words: NFKC, lower-cased ``\\w+`` runs."""

        def word_tokenize(self, text: str) -> list[str]:
            return _WORD.findall(unicodedata.normalize("NFKC", text).lower())

        def sent_tokenize(self, text: str) -> list[str]:
            return [text]

        def span_tokenize(self, text: str) -> list[tuple[int, int]]:
            return [(0, len(text))]

    return Words("en")


def minhash_config(threshold: float = 0.85):
    """datatrove's MinhashConfig matching prepare_data: word 3-grams, the same bands x rows for the
    threshold (0.85 -> 16 x 8), seed 1, 64-bit sha1 of each shingle (datatrove's xxhash option
    passes ``str`` to xxhash, which xxhash 4 rejects); text normalisation limited to lower-casing,
    whitespace and punctuation (no number/diacritic folding)."""
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.utils.hashing import HashConfig
    from datatrove.utils.text import TextNormConfig

    bands, rows = lsh_params(threshold, NUM_PERM)
    return MinhashConfig(n_grams=SHINGLE, num_buckets=bands, hashes_per_bucket=rows, seed=SEED,
                         norm_config=TextNormConfig(norm_unicode_diacritics=False, norm_numbers=False),
                         hash_config=HashConfig(precision=64, hash_fc="sha1"))


def pipelines(input_folder: str, work: str, *, threshold: float = 0.85, glob: str = "*.jsonl") -> list[tuple[list, str]]:
    """The four stages as ``(steps, tasks_kind)``; tasks_kind is "shards" (any number of tasks,
    the same for stages 1 and 4), "bands" (one task per LSH band) or "one"."""
    require("datatrove", "for near-dup removal on datatrove")
    require("orjson", "for datatrove's JSONL reader")
    from datatrove.pipeline.dedup.minhash import (MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter,
                                                  MinhashDedupSignature)
    from datatrove.pipeline.filters import LambdaFilter
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    cfg = minhash_config(threshold)
    w = Path(work)

    def reader():
        return JsonlReader(input_folder, glob_pattern=glob, adapter=_adapter, compression=None)

    def writer(sub: str):
        return JsonlWriter(str(w / sub), output_filename="${rank}.jsonl", compression=None, adapter=_ids_only)

    return [
        ([reader(), MinhashDedupSignature(output_folder=str(w / "signatures"), config=cfg,
                                          language=_word_tokenizer())], "shards"),
        ([MinhashDedupBuckets(input_folder=str(w / "signatures"), output_folder=str(w / "buckets"), config=cfg)],
         "bands"),
        ([MinhashDedupCluster(input_folder=str(w / "buckets"), output_folder=str(w / "remove_ids"), config=cfg,
                              save_cluster_id=True)], "one"),
        ([reader(), MinhashDedupFilter(input_folder=str(w / "remove_ids"), exclusion_writer=writer("removed"),
                                       load_cluster_ids=True),
          LambdaFilter(_in_cluster), writer("cluster_keepers")], "shards"),
    ]


def executors(input_folder: str, work: str, *, executor: str = "local", tasks: int = 1, workers: int = 1,
              threshold: float = 0.85, glob: str = "*.jsonl", **slurm_or_ray: Any) -> list:
    """One datatrove executor per stage, each depending on the previous one. ``executor`` is
    ``local`` (LocalPipelineExecutor, ``workers`` processes), ``slurm`` (SlurmPipelineExecutor:
    pass ``partition``, ``time`` and optionally ``cpus_per_task``, ``mem_per_cpu_gb``,
    ``venv_path``, ``sbatch_args``) or ``ray`` (RayPipelineExecutor on the connected cluster)."""
    if executor not in EXECUTORS:
        raise UsageError(f"--executor {executor!r}: expected one of {', '.join(EXECUTORS)}")
    stages = pipelines(input_folder, work, threshold=threshold, glob=glob)
    n_bands = minhash_config(threshold).num_buckets
    out, prev = [], None
    for i, (steps, kind) in enumerate(stages, 1):
        n = {"shards": tasks, "bands": n_bands, "one": 1}[kind]
        common = {"pipeline": steps, "tasks": n, "logging_dir": str(Path(work) / "logs" / f"stage{i}")}
        if executor == "local":
            from datatrove.executor import LocalPipelineExecutor
            ex = LocalPipelineExecutor(**common, workers=min(workers, n), depends=prev)
        elif executor == "slurm":
            from datatrove.executor import SlurmPipelineExecutor
            ex = SlurmPipelineExecutor(**common, job_name=f"ft-near-dup-{i}", depends=prev, **slurm_or_ray)
        else:
            from datatrove.executor import RayPipelineExecutor
            ex = RayPipelineExecutor(**common, workers=workers, depends=prev, **slurm_or_ray)
        out.append(ex)
        prev = ex
    return out


def collect_removed(work: str) -> list[dict[str, Any]]:
    """The removed list from a finished run: one record per removed row, in (source, line) order,
    with the cluster's kept row as ``duplicate_of``."""
    w = Path(work)
    keeper: dict[int, dict[str, Any]] = {}
    for f in sorted((w / "cluster_keepers").glob("*.jsonl")):
        for line in f.read_text(encoding="utf-8").splitlines():
            d = json.loads(line)
            keeper.setdefault(d["cluster"], {"source": d["source"], "line": d["line"]})
    out = []
    for f in sorted((w / "removed").glob("*.jsonl")):
        for line in f.read_text(encoding="utf-8").splitlines():
            d = json.loads(line)
            out.append({"source": d["source"], "line": d["line"], "duplicate_of": keeper.get(d["cluster"]),
                        "cluster": d["cluster"], "detected_by": "datatrove minhash"})
    out.sort(key=lambda d: (d["source"], d["line"]))
    return out


def run(input_folder: str, work: str, *, executor: str = "local", tasks: int = 1, workers: int = 1,
        threshold: float = 0.85, glob: str = "*.jsonl", **slurm_or_ray: Any) -> list[dict[str, Any]] | None:
    """Run (local: to completion) or submit (slurm/ray) the four stages. Returns the removed list
    when the run finished here, None when it was submitted to a cluster (collect it later with
    :func:`collect_removed`)."""
    if not Path(input_folder).is_dir():
        raise UsageError(f"{input_folder}: not a folder of JSONL files (datatrove reads folders; --glob picks files)")
    exs = executors(input_folder, work, executor=executor, tasks=tasks, workers=workers, threshold=threshold,
                    glob=glob, **slurm_or_ray)
    exs[-1].run()  # runs (or submits) the whole chain through its dependencies
    return collect_removed(work) if executor == "local" else None


def load_removed_list(path: str) -> dict[tuple[str, int], dict[str, Any] | None]:
    """``(source, line) -> duplicate_of`` from a removed list (``--near-dup-removed``); UsageError
    (exit 2) when the file is not such a list."""
    from . import jsonl

    p = jsonl.check_readable(path)
    out: dict[tuple[str, int], dict[str, Any] | None] = {}
    for rl in jsonl.iter_lines(p):
        if rl.error == "blank_line":
            continue
        obj = rl.obj if not rl.error else None
        if not isinstance(obj, dict) or not isinstance(obj.get("source"), str) or not isinstance(obj.get("line"), int):
            raise UsageError(f"--near-dup-removed {p}: line {rl.line} is not a removed-list record "
                             '({"source": FILE_NAME, "line": N, ...}, as near_dedup_cluster.py writes)')
        dup = obj.get("duplicate_of")
        out[(obj["source"], obj["line"])] = dup if isinstance(dup, dict) else None
    return out
