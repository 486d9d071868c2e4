"""Issue 20 item 7: export writes the dataset streaming (row by row, Arrow
columns a chunk at a time) and its files are byte for byte those of
building the whole list in memory first."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from tapir.pipeline.stages import export

datasets = pytest.importorskip("datasets")


def rows(n: int) -> list[dict]:
    """Rows like export's: the first ones have no refined instruction and no
    round (None: a chunk of them alone is Arrow's null type), later ones do."""
    out = []
    for i in range(n):
        late = i >= n // 2
        out.append({"id": f"it-{i}", "instruction": f"Écris un poème n°{i} ✓", "input": "" if i % 3 else "ctx",
                    "output": f"answer {i}\nwith a newline", "task_type": ("Math", "Writing", None)[i % 3],
                    "origin": "seed" if i < n // 3 else "expand", "round": (i % 3 + 1) if late else None,
                    "refined_instruction": f"refined {i}" if late and i % 2 else None,
                    "weight": round(0.3 + i / 7, 6)})
    return out


def write_whole(folder: Path, data: list[dict]) -> None:
    """The oracle: what export wrote before, the whole list in memory."""
    folder.mkdir(parents=True)
    with (folder / "dataset.jsonl").open("w", encoding="utf-8") as f:
        for row in data:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    datasets.Dataset.from_list(list(data)).save_to_disk(str(folder / "dataset"))


def write_streamed(folder: Path, data) -> dict:
    job = SimpleNamespace(ctx=SimpleNamespace(out_dir=folder), info={})
    export.write_dataset(job, data)
    return job.info


def files(folder: Path) -> dict[str, bytes]:
    out = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if path.name == "state.json":  # its fingerprint is drawn at random for an in-memory dataset
            state = json.loads(data)
            state.pop("_fingerprint")
            data = json.dumps(state).encode()
        out[str(path.relative_to(folder))] = data
    return out


@pytest.mark.parametrize("n, chunk", [(300, 7), (300, 4096), (5, 2), (1, 1)])
def test_streamed_files_are_byte_identical_to_the_whole_list(tmp_path, monkeypatch, n, chunk):
    monkeypatch.setattr(export, "ROWS_PER_CHUNK", chunk)
    data = rows(n)
    write_whole(tmp_path / "whole", data)
    info = write_streamed(tmp_path / "streamed", iter(data))  # a generator: never a list
    assert info["rows"] == n
    whole, streamed = files(tmp_path / "whole"), files(tmp_path / "streamed")
    assert sorted(whole) == sorted(streamed) and any(name.endswith(".arrow") for name in whole)
    for name in whole:
        assert streamed[name] == whole[name], name
    loaded = datasets.load_from_disk(str(tmp_path / "streamed" / "dataset"))
    assert loaded.to_list() == data


def test_a_column_mixing_ints_and_floats_across_chunks_is_typed_as_the_whole_list_types_it(tmp_path, monkeypatch):
    monkeypatch.setattr(export, "ROWS_PER_CHUNK", 2)
    data = [{"id": str(i), "weight": 1 if i < 2 else 0.5} for i in range(4)]
    write_whole(tmp_path / "whole", data)
    write_streamed(tmp_path / "streamed", iter(data))
    assert files(tmp_path / "whole") == files(tmp_path / "streamed")


def test_no_rows_writes_what_the_empty_list_wrote(tmp_path):
    info = write_streamed(tmp_path / "streamed", iter([]))
    write_whole(tmp_path / "whole", [])
    assert info["rows"] == 0
    assert (tmp_path / "streamed" / "dataset.jsonl").read_text() == ""
    assert files(tmp_path / "whole") == files(tmp_path / "streamed")


def test_dataset_rows_is_a_generator():
    # The export stage never builds every row as a dict at once.
    ex = SimpleNamespace(response="r", weight=0.5)
    it = SimpleNamespace(id="a", instruction="i", input="", task_type="Math", meta={"origin": "seed"})
    got = export.dataset_rows([ex], [it])
    assert iter(got) is got
    assert next(got) == {"id": "a", "instruction": "i", "input": "", "output": "r", "task_type": "Math",
                         "origin": "seed", "round": None, "refined_instruction": None, "weight": 0.5}


def test_the_training_set_is_freed_once_its_rows_are_written(tmp_path, monkeypatch):
    """export builds the last round's training set for the dataset; the model
    cards then build each round's again: the first one is gone by then."""
    import gc
    import weakref

    from tapir.pipeline.stages import train
    from tapir.roles import Item

    class Items(list):  # a list that can be weakly referenced
        pass

    built: list[weakref.ref] = []

    def training_set(job, round):
        hard = Items(Item(f"h{i}", f"hard {i}", "", f"answer {i}", "Math", {"origin": "seed"}) for i in range(5))
        built.append(weakref.ref(hard))
        return hard, [], 1.0

    monkeypatch.setattr(train, "training_set", training_set)
    alive_for_arrow: list[bool] = []
    columns = export.jsonl_columns

    def jsonl_columns(path):  # the Arrow columns (and datasets) come after the training set is gone
        gc.collect()
        alive_for_arrow.append(built[0]() is not None)
        return columns(path)

    monkeypatch.setattr(export, "jsonl_columns", jsonl_columns)
    config = SimpleNamespace(curriculum=SimpleNamespace(weighting="eq4"))
    job = SimpleNamespace(ctx=SimpleNamespace(out_dir=tmp_path, config=config), info={})
    export.write_dataset(job, export.training_rows(job, 3))
    assert job.info["rows"] == 5
    gc.collect()
    assert len(built) == 1 and built[0]() is None
    assert alive_for_arrow == [False]
    lines = (tmp_path / "dataset.jsonl").read_text().splitlines()
    assert [json.loads(line)["output"] for line in lines] == [f"answer {i}" for i in range(5)]


def test_on_written_runs_between_the_jsonl_and_the_arrow_part(tmp_path, monkeypatch):
    """export frees what built the rows (the context's items) once the JSONL
    is written and before pyarrow allocates the columns: ``on_written`` runs
    when every row is in the file and no column has been built yet."""
    seen = []
    real = export.jsonl_columns
    monkeypatch.setattr(export, "jsonl_columns", lambda path: seen.append("columns") or real(path))

    def on_written():
        lines = (tmp_path / "dataset.jsonl").read_text(encoding="utf-8").splitlines()
        seen.append(("written", len(lines)))

    job = SimpleNamespace(ctx=SimpleNamespace(out_dir=tmp_path), info={})
    export.write_dataset(job, iter(rows(10)), on_written=on_written)
    assert seen == [("written", 10), "columns"]


def test_forget_items_makes_the_context_read_again(tmp_path):
    """Context.forget_items lets go of the items a stage run read; asking
    again reads them from the store (the same items)."""
    from tapir.pipeline.context import Context
    from tapir.store.db import open_store

    store = open_store(tmp_path / "t.db")
    with store.transaction() as conn:
        conn.execute("insert into runs (id, name, status, created_at) values ('r', 'r', 'running', 'now')")
        conn.execute("insert into stages (run_id, name, round, key, status) values ('r', 'ingest', 0, 'k', 'done')")
    ctx = Context(config=None, store=store, run=None, base_dir=tmp_path, out_dir=tmp_path, _item_reads={})
    from tapir.roles import Item

    ctx.add_items("k", [Item(id="a", instruction="Say hi")], "seed", 0)
    first = ctx.items("k")
    assert [it.id for it in first] == ["a"] and ctx.items("k") == first and ctx.store_item_reads == 1
    ctx.forget_items()
    assert ctx.items("k") == first and ctx.store_item_reads == 2
