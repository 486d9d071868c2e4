"""``tapir rewriter train``: fine-tune a local causal LM to refine instructions.

The paper (Appendix C) trains Qwen1.5-1.8B on (instruction, refined
instruction) pairs annotated by a strong model, and uses it as the rewriter.
This command does the same with tapir's ``hf`` trainer (full or LoRA) on the
pairs a run stored in its ``rewrites`` table (or a JSONL file), and saves a
folder a later run names as its rewriter model: ``hf:PATH`` with rewriter
option ``num_examples: 0`` (the model was trained on the refinement prompt
without examples).

Heavy libraries are imported inside the command (through the trainer).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import click

from tapir.cli.options import parse_options
from tapir.errors import TapirError

META_FILE = "rewriter.json"


def pairs_from_jsonl(path: str | Path) -> list[tuple[str, str]]:
    """(instruction, refined instruction) per row: ``instruction`` and
    ``refined_instruction`` (or ``refined``)."""
    from tapir.jsonl import read_jsonl

    pairs = []
    for lineno, row in read_jsonl(path):
        if not isinstance(row, dict):
            raise TapirError(f"{path}:{lineno}: expected an object with instruction and refined_instruction")
        refined = row.get("refined_instruction", row.get("refined"))
        if not isinstance(row.get("instruction"), str) or not isinstance(refined, str):
            raise TapirError(f"{path}:{lineno}: needs string fields 'instruction' and 'refined_instruction'")
        pairs.append((row["instruction"], refined))
    return pairs


def pairs_from_store(store, run: str | None = None) -> list[tuple[str, str]]:
    """(instruction, refined instruction) from the ``rewrites`` table: rows
    without an error; ``run`` limits them to one run (its id, or the key of
    one of its stages, which is what pipeline rows carry in ``scope``)."""
    from tapir.store import rewrites, stages

    missing = {"instruction", "refined_instruction"} - rewrites.columns(store)
    if missing:
        raise TapirError(f"the database's rewrites table has no {', '.join(sorted(missing))} column; "
                         f"use --from-jsonl, or a database written by a tapir that stores refined instructions")
    scopes = None if run is None else [run, *stages.keys_of_run(store, run)]
    return rewrites.refined_pairs(store, scopes)


def usable_pairs(pairs: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], dict[str, int]]:
    """Pairs worth training on: both sides non-empty, refined different from
    the original, each pair once. Returns (pairs, skipped counts by reason)."""
    seen: set[tuple[str, str]] = set()
    kept = []
    skipped = {"empty": 0, "unchanged": 0, "duplicate": 0}
    for instruction, refined in pairs:
        instruction, refined = instruction.strip(), refined.strip()
        if not instruction or not refined:
            skipped["empty"] += 1
        elif instruction == refined:
            skipped["unchanged"] += 1
        elif (instruction, refined) in seen:
            skipped["duplicate"] += 1
        else:
            seen.add((instruction, refined))
            kept.append((instruction, refined))
    return kept, skipped


def training_examples(pairs: list[tuple[str, str]]):
    """TrainExamples: the refinement prompt without examples -> the refined instruction."""
    from tapir.roles import TrainExample

    from tapir_teachers.prompts import refine_messages

    return [TrainExample(refine_messages(instruction, []), refined) for instruction, refined in pairs]


def prompt_hash() -> str:
    from tapir_teachers.prompts import REFINE_SYSTEM

    return hashlib.sha256(REFINE_SYSTEM.encode()).hexdigest()[:16]


def register(cli: click.Group) -> None:
    @cli.group()
    def rewriter():
        """Instruction rewriters (paper Appendix C): train a refinement model."""

    @rewriter.command()
    @click.option("--base", required=True,
                  help="Base causal LM: a transformers folder, hf:PATH, embedded:NAME, a named model or hub id "
                       "(the paper used Qwen1.5-1.8B).")
    @click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
                  help="Folder for the trained rewriter (a later run names it as hf:OUT).")
    @click.option("--from-jsonl", "jsonl_path", type=click.Path(exists=True, dir_okay=False), default=None,
                  help="Read pairs from this JSONL (instruction, refined_instruction) instead of the database.")
    @click.option("--run", "run_id", default=None,
                  help="Only the pairs of this run (id, unique id prefix or name; default: every run in --db).")
    @click.option("--lora/--full", default=False, show_default=True, help="LoRA adapters (merged on save) or "
                                                                          "full fine-tuning.")
    @click.option("--epochs", type=float, default=None, help="Default: the trainer's (3).")
    @click.option("--lr", type=float, default=None, help="Default: 2e-5 full, 2e-4 LoRA.")
    @click.option("--batch-size", type=int, default=None, help="Effective batch size (default 32).")
    @click.option("--micro-batch-size", type=int, default=None)
    @click.option("--max-length", type=int, default=None, help="Tokens per example (default 2048).")
    @click.option("--max-steps", type=int, default=None, help="Stop after this many optimizer steps.")
    @click.option("--seed", type=int, default=None)
    @click.option("--limit", type=int, default=None, help="Train on the first N usable pairs only.")
    @click.option("-o", "--option", "options", multiple=True, help="Other hf trainer option KEY=VALUE (repeatable).")
    @click.option("--dry-run", is_flag=True, help="Count the pairs and stop (no training).")
    def train(base, out_dir, jsonl_path, run_id, lora, epochs, lr, batch_size, micro_batch_size, max_length,
              max_steps, seed, limit, options, dry_run):
        """Fine-tune a causal LM (--base) into an instruction rewriter on
        stored (instruction, refined instruction) pairs."""
        trainer_options = {
            "keep_checkpoints": False,
            **{k: v for k, v in {"epochs": epochs, "lr": lr, "batch_size": batch_size,
                                 "micro_batch_size": micro_batch_size, "max_length": max_length,
                                 "max_steps": max_steps, "seed": seed}.items() if v is not None},
            **parse_options(options),
        }
        if lora:
            trainer_options["lora"] = trainer_options.get("lora") or True
        if jsonl_path:
            source = f"jsonl:{jsonl_path}"
            raw = pairs_from_jsonl(jsonl_path)
        else:
            from tapir.runs import resolve_run
            from tapir.store import open_store, resolve_db_path

            db_path = resolve_db_path(click.get_current_context().obj.get("db"))
            store = open_store(db_path, create=False)  # missing or a folder: the message every command gives
            try:
                run_id = resolve_run(store, run_id) if run_id else None
                raw = pairs_from_store(store, run_id)
            finally:
                store.close()
            source = f"db:{db_path}" + (f" run {run_id}" if run_id else "")
        pairs, skipped = usable_pairs(raw)
        if limit is not None:
            pairs = pairs[:limit]
        skipped_text = ", ".join(f"{k} {v}" for k, v in skipped.items() if v)
        click.echo(f"pairs: {len(pairs)} from {source}" + (f" (skipped: {skipped_text})" if skipped_text else ""))
        if dry_run:
            return
        if not pairs:
            raise TapirError("no (instruction, refined instruction) pairs to train on")

        from tapir.plugins import registry

        trainer = registry().get("trainers", "hf").create(options=trainer_options)
        metrics = trainer.train(base, training_examples(pairs), out_dir)
        meta = {
            "kind": "tapir-rewriter",
            "base": base,
            "pairs": len(pairs),
            "skipped": skipped,
            "source": source,
            "prompt": "refine_messages without examples",
            "prompt_sha256": prompt_hash(),
            "rewriter_options": {"mode": "refine-instruction", "num_examples": 0},
            "trainer_options": {k: v for k, v in trainer_options.items() if k not in ("progress", "callbacks")},
            "train_loss": metrics.get("train_loss"),
            "steps": metrics.get("steps"),
            "seconds": metrics.get("seconds"),
        }
        Path(out_dir, META_FILE).write_text(json.dumps(meta, indent=2, default=str) + "\n", encoding="utf-8")
        loss = metrics.get("train_loss")
        click.echo(f"saved {out_dir} ({metrics.get('steps')} steps, train loss "
                   f"{loss:.4f}, {metrics.get('seconds', 0):.0f} s)" if loss is not None else f"saved {out_dir}")
        click.echo("use it in a config:\n"
                   f"  rewriter:\n    name: task-aware\n    model: {{model: 'hf:{out_dir}'}}\n"
                   f"    options: {{num_examples: 0}}")
