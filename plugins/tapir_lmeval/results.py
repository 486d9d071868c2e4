"""lm-eval's results dict -> tapir benchmark rows.

Every ``metric,filter`` value of every task and group in
``results["results"]`` becomes one row, with its ``metric_stderr,filter``
(``None`` where lm-eval says "N/A"). The metric is named as lm-eval keys it,
with the default ``,none`` filter suffix dropped (``acc``,
``exact_match,strict-match``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

# Settings from results["config"] worth keeping with every row.
_CONFIG_KEYS = (
    "model", "model_args", "model_dtype", "model_num_parameters", "model_sha", "batch_size", "device",
    "limit", "bootstrap_iters", "gen_kwargs", "random_seed", "numpy_seed", "torch_seed", "fewshot_seed",
)


def metric_name(key: str) -> tuple[str, str, str] | None:
    """``"acc,none"`` -> ("acc", "none", "acc"); stderr and non-metric keys -> None."""
    metric, sep, filt = key.partition(",")
    if not sep or "_stderr" in metric:
        return None
    return metric, filt, metric if filt == "none" else f"{metric},{filt}"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _sample_count(results: dict, name: str, key: str, entry: dict) -> int | None:
    counts = results.get("n-samples", {})
    if name in counts:
        return int(counts[name]["effective"])
    by_metric = entry.get("sample_count")
    if isinstance(by_metric, dict) and key in by_metric:
        return int(by_metric[key])
    if "sample_len" in entry:
        return int(entry["sample_len"])
    return None


def _file_digest(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def data_version(name: str, results: dict[str, Any], version: str, yaml_dir: Path | None = None) -> str:
    """What supplied a task's documents: lm-eval's version, the task's version
    and its dataset (hub path, name and revision; for local ``data_files`` a
    sha256 of the files, looked up from the working directory, then from the
    task YAML's folder)."""
    parts = [f"lm_eval {version}"]
    task_version = results.get("versions", {}).get(name)
    if task_version is not None:
        parts.append(f"{name} v{task_version}")
    config = results.get("configs", {}).get(name) or {}
    dataset = config.get("dataset_path")
    if dataset:
        kwargs = config.get("dataset_kwargs") or {}
        text = dataset + (f"/{config['dataset_name']}" if config.get("dataset_name") else "")
        if kwargs.get("revision"):
            text += f"@{kwargs['revision']}"
        files = kwargs.get("data_files")
        if files:
            names = [files] if isinstance(files, str) else (
                [f for v in files.values() for f in ([v] if isinstance(v, str) else v)]
                if isinstance(files, dict) else list(files))
            found = []
            for f in dict.fromkeys(names):
                path = Path(f)
                if not path.is_file() and yaml_dir is not None:
                    path = yaml_dir / f
                if path.is_file():
                    found.append(path)
            if found and len(found) == len(dict.fromkeys(names)):
                text += f" sha256:{_file_digest(found)}"
        parts.append(text)
    return ", ".join(parts)


def rows_from_results(results: dict[str, Any], primary: dict[str, tuple[str, ...] | None],
                      settings: dict[str, Any] | None = None,
                      yaml_dirs: dict[str, Path] | None = None) -> list[dict[str, Any]]:
    """One row per (task or group, metric) in lm-eval's results.

    ``primary`` maps top-level task/group names to their headline metrics
    (``None``: the task's first metric); those rows get
    ``meta["primary"] = True``, every other row False. ``yaml_dirs`` (task
    name -> folder of its YAML) locates local data files for ``data_version``.
    """
    import importlib.metadata

    version = results.get("lm_eval_version") or importlib.metadata.version("lm_eval")
    config = {k: results.get("config", {}).get(k) for k in _CONFIG_KEYS if k in results.get("config", {})}
    groups = results.get("groups") or {}
    rows = []
    for name, entry in results.get("results", {}).items():
        first = None
        version_text = data_version(name, results, version, (yaml_dirs or {}).get(name))
        for key, raw in entry.items():
            parsed = metric_name(key)
            value = _number(raw)
            if parsed is None or value is None:
                continue
            metric, filt, stored = parsed
            first = first or stored
            wanted = primary.get(name)
            is_primary = name in primary and (stored == first if wanted is None else stored in wanted)
            stderr = _number(entry.get(f"{metric}_stderr,{filt}"))
            rows.append(
                {
                    "task": name,
                    "metric": stored,
                    "value": value,
                    "stderr": stderr,
                    "n": _sample_count(results, name, key, entry),
                    "meta": {
                        "lm_eval_version": version,
                        "task_version": results.get("versions", {}).get(name),
                        "n_shot": results.get("n-shot", {}).get(name),
                        "n_samples": results.get("n-samples", {}).get(name),
                        "filter": filt,
                        "higher_is_better": results.get("higher_is_better", {}).get(name, {}).get(metric),
                        "primary": is_primary,
                        "group": name in groups,
                        "subtasks": results.get("group_subtasks", {}).get(name) or None,
                        "alias": entry.get("alias"),
                        "config": config,
                        "task_config": results.get("configs", {}).get(name),
                        **(settings or {}),
                        "data_version": version_text,
                    },
                }
            )
    return rows
