"""Where the files of content-keyed stages live, and a run's links to them.

A stage's files (a training round's checkpoint, anything a stage asks
:meth:`tapir.pipeline.engine.Job.artifact_dir` for) belong to its *key*, and
a key is reused by every run on the same database. So the files live with
the database, not with the run that computed them first, in a folder named
after the database file::

    <db folder>/<db name>-stages/<label>-<key[:12]>/
    e.g. ./tapir-stages/train-r1-3f2a9c0d41b7/ for ./tapir.db,
         ./tapir-demo-stages/train-r1-.../ for ./tapir-demo.db

One folder per database, because a key (and the lock that guards its
computation) is one database's: two databases in one folder never write
into each other's stage folders.

and a run's ``output_dir/checkpoints/round-N`` are (relative) symbolic links
into that folder. Deleting a run's ``output_dir`` removes its links and
exports, never a file another run reads; ``tapir distill`` on the same
config re-creates the links without computing anything again.

A database kept in memory (tests, the dry run) has no folder: its stage
files go under ``output_dir/stages/`` as before. Databases written before
this layout keep the paths they stored (``<output_dir of the first
run>/stages/...``): nothing is moved; see docs/pipeline.md "Outputs".
"""

from __future__ import annotations

import os
from pathlib import Path

STAGES_SUFFIX = "-stages"

__all__ = ["STAGES_SUFFIX", "link_checkpoints", "link_to", "stage_dir", "stages_root", "unreferenced"]


def stages_root(store_path: str | os.PathLike | None, out_dir: Path) -> Path:
    """The folder holding every stage's files for the database at
    ``store_path``: ``<db folder>/<db name>-stages`` (``tapir.db``:
    ``tapir-stages``); ``out_dir/stages`` for an in-memory database
    (``store_path`` None)."""
    if store_path is None:
        return Path(out_dir) / "stages"
    db = Path(store_path).resolve()
    return db.parent / f"{db.stem}{STAGES_SUFFIX}"


def stage_dir(store_path: str | os.PathLike | None, out_dir: Path, name: str) -> Path:
    """The folder of stage folder ``name`` (``<label>-<key[:12]>``): under
    :func:`stages_root`, unless this run's output_dir already holds one of
    that name from before ``<db name>-stages/`` (a training interrupted
    before the upgrade): that one is used where it is, so the trainer
    resumes it; nothing is moved."""
    shared = stages_root(store_path, out_dir) / name
    legacy = Path(out_dir) / "stages" / name
    if store_path is not None and not shared.exists() and legacy.is_dir():
        return legacy
    return shared


def link_to(link: Path, target: Path) -> str:
    """Make ``link`` a relative symbolic link to ``target`` (replacing what
    was there, atomically); returns the link's path."""
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.with_name(link.name + ".tmp")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(os.path.relpath(Path(target).resolve(), link.parent.resolve()), tmp)
    os.replace(tmp, link)
    return str(link)


def link_checkpoints(out_dir: Path, paths: dict[int, str]) -> tuple[dict[str, str], list[str]]:
    """``out_dir/checkpoints/round-N`` -> each round's checkpoint folder.

    Returns (``round-N`` -> link path, one line per round whose folder is
    gone). A missing folder gets no link (a dangling link would load as "no
    such model" much later); the line says what was lost and what to do."""
    links: dict[str, str] = {}
    missing: list[str] = []
    for r, path in sorted(paths.items()):
        name = f"round-{r}"
        link = Path(out_dir) / "checkpoints" / name
        if not Path(path).is_dir():
            missing.append(f"checkpoint of round {r} is missing: {path} no longer exists (deleted by hand, or, "
                           f"in a database from before <db name>{STAGES_SUFFIX}/, with the output_dir of the run that "
                           f"trained it). Restore that folder, or change a trainer option to train round {r} again")
            if link.is_symlink():
                link.unlink()
            continue
        links[name] = link_to(link, Path(path))
    return links, missing


def unreferenced(store) -> list[Path]:
    """Folders under the database's ``<db name>-stages/`` that no stage row of
    any run names by key (left by a database that was replaced or edited by
    hand). Nothing deletes them on its own; ``tapir`` never removes a stage
    folder a stage row still names."""
    if store.path is None:
        return []
    root = stages_root(store.path, Path("."))
    if not root.is_dir():
        return []
    from tapir.store.stages import all_keys

    keys = {key[:12] for key in all_keys(store)}
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.rsplit("-", 1)[-1] not in keys)
