"""``tapir classifier train | eval | label``.

Heavy libraries are imported inside the commands, so ``tapir --help`` stays fast.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from tapir.cli.options import parse_options
from tapir.errors import TapirError
from tapir.jsonl import read_jsonl

BENCHMARK = "classifier"
TASK = "task-type"


def record_accuracy(db_path: str | None, model: str, result: dict[str, Any], meta: dict[str, Any]) -> None:
    """Upsert one accuracy row into ``benchmark_results`` (benchmark 'classifier')."""
    from tapir.store import benchmarks, open_store
    from tapir.store.db import utcnow

    store = open_store(db_path)
    try:
        counts = {label: {"n": r["n"], "correct": r["correct"]} for label, r in result["per_label"].items()}
        benchmarks.replace_row(store, BENCHMARK, model, TASK, "accuracy", result["accuracy"],
                               _stderr(result["accuracy"], result["n"]), result["n"], {**meta, "per_label": counts},
                               utcnow())
    finally:
        store.close()


def _stderr(p: float, n: int) -> float | None:
    return (p * (1 - p) / n) ** 0.5 if n > 0 else None


def _print_result(result: dict[str, Any], verbose: bool) -> None:
    if verbose:
        for label, row in result["per_label"].items():
            click.echo(f"  {label:<18} {row['correct']:>3}/{row['n']:<3} {row['accuracy']:.2f}")
        if result["confusions"]:
            top = ", ".join(f"{g}->{p} x{c}" for g, p, c in result["confusions"][:8])
            click.echo(f"  most frequent mistakes: {top}")


def register(cli: click.Group) -> None:
    @cli.group()
    def classifier():
        """Task-type classifiers: train, evaluate, label."""

    @classifier.command()
    @click.option("--labels", "labels_path", required=True, type=click.Path(exists=True, dir_okay=False),
                  help="Labelled JSONL (instruction, input, task_type).")
    @click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
                  help="Folder for the trained classifier.")
    @click.option("--base", default="minilm", show_default=True,
                  help="Encoder: 'minilm' (embedded) or any encoder folder / hub id.")
    @click.option("--holdout", default=0.2, show_default=True, type=float, help="Fraction held out per label.")
    @click.option("--seed", default=0, show_default=True, type=int)
    @click.option("--epochs", default=None, type=int, help="Default 12.")
    @click.option("--lr", default=None, type=float, help="Default 2e-4.")
    @click.option("--class-weights", is_flag=True, help="Weight the loss by inverse label frequency.")
    @click.option("--name", default=None, help="Model name in benchmark_results (default: the --out path).")
    @click.option("-v", "--verbose", is_flag=True, help="Per-label accuracy.")
    def train(labels_path, out_dir, base, holdout, seed, epochs, lr, class_weights, name, verbose):
        """Fine-tune the encoder classifier; print and store held-out accuracy."""
        from tapir_classifiers.encoder import DEFAULTS, train_encoder
        from tapir_classifiers.labelled import load_labelled, present_labels, stratified_split

        examples = load_labelled(labels_path)
        train_set, heldout = stratified_split(examples, holdout, seed)
        click.echo(f"training on {len(train_set)} examples, {len(heldout)} held out, "
                   f"{len(present_labels(examples))} labels, base {base}", err=True)
        meta = train_encoder(
            train_set, out_dir, heldout=heldout, base=base, seed=seed,
            epochs=epochs or DEFAULTS["epochs"], lr=lr or DEFAULTS["lr"], class_weights=class_weights,
            labels=present_labels(examples), progress=lambda msg: click.echo(f"  {msg}", err=True),
        )
        click.echo(f"saved {out_dir} ({meta['train_seconds']:.0f} s)")
        if meta["accuracy"] is None:
            click.echo("no held-out examples (--holdout 0): accuracy not measured")
            return
        result = {"accuracy": meta["accuracy"], "n": len(heldout), "per_label": meta["per_label"],
                  "confusions": meta.get("confusions", [])}
        click.echo(f"held-out accuracy: {meta['accuracy']:.3f} (n={len(heldout)})")
        _print_result(result, verbose)
        record_accuracy(
            click.get_current_context().obj["db"], name or str(out_dir), result,
            {"classifier": "encoder", "base": base, "seed": seed, "holdout": holdout, "labels_file": labels_path,
             "epochs": meta["epochs"], "lr": meta["lr"], "n_train": meta["n_train"]},
        )

    @classifier.command(name="eval")
    @click.option("--labels", "labels_path", required=True, type=click.Path(exists=True, dir_okay=False))
    @click.option("--name", "clf_name", required=True, help="Classifier: centroid, encoder, llm, ...")
    @click.option("--model", default=None, help="Model id for classifiers that need one (llm).")
    @click.option("-o", "--option", "options", multiple=True, help="Classifier option key=value (repeatable).")
    @click.option("--holdout", default=0.2, show_default=True, type=float)
    @click.option("--seed", default=0, show_default=True, type=int)
    @click.option("--folds", default=0, type=int, help="k-fold cross-validation instead of one split.")
    @click.option("--limit", default=None, type=int, help="Evaluate on the first N held-out examples only.")
    @click.option("--store/--no-store", "keep", default=True, show_default=True,
                  help="Record the accuracy in benchmark_results.")
    @click.option("-v", "--verbose", is_flag=True)
    def eval_cmd(labels_path, clf_name, model, options, holdout, seed, folds, limit, keep, verbose):
        """Held-out accuracy of any classifier on a labelled file.

        centroid fits on the training split, encoder trains on it (or loads
        -o model_dir=DIR), llm needs no training and only reads the held-out
        split."""
        from tapir_classifiers.labelled import evaluate, kfold, load_labelled, stratified_split

        examples = load_labelled(labels_path)
        opts = parse_options(options)
        splits = kfold(examples, folds, seed) if folds else [stratified_split(examples, holdout, seed)]
        obj = click.get_current_context().obj
        started = time.perf_counter()
        totals = {"correct": 0, "n": 0}
        per_label: dict[str, dict[str, int]] = {}
        confusions: dict[tuple[str, str], int] = {}
        extra: dict[str, Any] = {}
        for k, (train_set, test_set) in enumerate(splits):
            clf = _build(clf_name, model, opts, train_set, len(test_set), labels_path, holdout, seed, obj,
                         k if folds else None)
            if limit:
                test_set = test_set[:limit]
            result = evaluate(clf, test_set)
            if folds:
                click.echo(f"fold {k + 1}/{folds}: {result['accuracy']:.3f} (n={result['n']})")
            totals["correct"] += result["correct"]
            totals["n"] += result["n"]
            for label, row in result["per_label"].items():
                acc = per_label.setdefault(label, {"n": 0, "correct": 0})
                acc["n"] += row["n"]
                acc["correct"] += row["correct"]
            for g, p, c in result["confusions"]:
                confusions[(g, p)] = confusions.get((g, p), 0) + c
            if getattr(clf, "stats", None):
                for key, value in clf.stats.items():
                    extra[key] = extra.get(key, 0) + value
        merged = {
            "accuracy": totals["correct"] / totals["n"],
            "n": totals["n"],
            "per_label": {lab: {**r, "accuracy": r["correct"] / r["n"]} for lab, r in per_label.items()},
            "confusions": [[g, p, c] for (g, p), c in sorted(confusions.items(), key=lambda kv: -kv[1])],
        }
        how = f"{folds}-fold CV" if folds else f"held-out {holdout:g}"
        click.echo(f"{clf_name}{' ' + model if model else ''}: accuracy {merged['accuracy']:.3f} "
                   f"(n={merged['n']}, {how}, seed {seed}, {time.perf_counter() - started:.0f} s)")
        if extra:
            click.echo("parse stats: " + ", ".join(f"{k} {v}" for k, v in sorted(extra.items())))
        _print_result(merged, verbose)
        if keep:
            record_accuracy(
                obj["db"], f"{clf_name}:{model}" if model else clf_name, merged,
                {"classifier": clf_name, "model": model, "options": opts, "seed": seed, "holdout": holdout,
                 "folds": folds, "limit": limit, "labels_file": labels_path, "parse_stats": extra},
            )

    @classifier.command()
    @click.option("--name", "clf_name", default="llm", show_default=True)
    @click.option("--model", default=None, help="Model id (needed by llm).")
    @click.option("-o", "--option", "options", multiple=True, help="Classifier option key=value (repeatable).")
    @click.option("--batch-size", default=64, show_default=True, type=int)
    @click.argument("in_path", type=click.Path(exists=True, dir_okay=False))
    @click.argument("out_path", type=click.Path(dir_okay=False))
    def label(clf_name, model, options, batch_size, in_path, out_path):
        """Label the instructions of IN_PATH (JSONL) with task types into
        OUT_PATH: each row gains task_type, task_confidence and classifier.
        The output can train the encoder classifier."""
        rows = _read_jsonl(Path(in_path))
        opts = parse_options(options)
        obj = click.get_current_context().obj
        clf = _create(clf_name, model, opts, obj)
        from tapir_classifiers.labelled import example_text

        out = Path(out_path)
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w", encoding="utf-8") as fh:
            for start in range(0, len(rows), batch_size):
                chunk = rows[start : start + batch_size]
                texts = [example_text(str(r.get("instruction") or ""), str(r.get("input") or "")) for r in chunk]
                for row, (lab, conf) in zip(chunk, clf.classify(texts)):
                    row.update(task_type=lab, task_confidence=round(conf, 4),
                               classifier=f"{clf_name}:{model}" if model else clf_name)
                    fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                click.echo(f"  {min(start + batch_size, len(rows))}/{len(rows)}", err=True)
        stats = getattr(clf, "stats", None)
        click.echo(f"wrote {len(rows)} labelled rows to {out_path}"
                   + (f" (unparsed -> Others: {stats['fallback']})" if stats is not None else ""))


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    for lineno, row in read_jsonl(path):
        if not isinstance(row, dict) or not str(row.get("instruction") or "").strip():
            raise TapirError(f"{path}:{lineno}: expected an object with an 'instruction'")
        rows.append(row)
    return rows


def _create(name: str, model: str | None, opts: dict[str, Any], obj: dict[str, Any], **extra: Any):
    from tapir.plugins import registry

    component = registry().get("classifiers", name)
    backend = None
    if model:
        from tapir.models import load_cached
        from tapir.store import open_store

        backend = load_cached(model, open_store(obj["db"]))
    elif name == "llm":
        raise TapirError("the llm classifier needs --model (e.g. smollm2-135m-instruct or openai/gpt-4o-mini)")
    return component.create(backend, options={**opts, **extra})


def _build(name, model, opts, train_set, n_test, labels_path, holdout, seed, obj, fold):
    """A classifier that has seen only ``train_set``."""
    if name == "centroid":
        return _create(name, model, opts, obj, examples=train_set)
    if name == "encoder":
        if "model_dir" in opts and fold is None:
            clf = _create(name, model, opts, obj, labels_path=labels_path, holdout=holdout, seed=seed)
            meta = getattr(clf, "meta", {})
            if meta.get("seed") != seed or meta.get("n_heldout") != n_test:
                click.echo(f"warning: {opts['model_dir']} was trained with seed {meta.get('seed')} and "
                           f"{meta.get('n_heldout')} held out; its training data may overlap this held-out split",
                           err=True)
            return clf
        import tempfile

        from tapir_classifiers.encoder import EncoderClassifier, train_encoder

        keys = {"base", "epochs", "lr", "head_lr", "batch_size", "class_weights", "max_length", "freeze_embeddings"}
        with tempfile.TemporaryDirectory(prefix="tapir-clf-") as tmp:
            train_encoder(train_set, tmp, seed=seed, progress=lambda m: click.echo(f"  {m}", err=True),
                          **{k: v for k, v in opts.items() if k in keys})
            # loaded into memory before the folder goes
            return EncoderClassifier(None, EncoderClassifier.Options(model_dir=tmp))
    if name == "llm" and opts.get("few_shot"):
        return _create(name, model, opts, obj, examples=train_set)  # shots never from the held-out part
    return _create(name, model, opts, obj)
