"""Per stage: status, items ok / failed, calls, tokens, cost, seconds;
failed items by kind; LLM calls by role (from :func:`tapir.runs.run_details`)."""

from __future__ import annotations

from tapir.report.pieces import Section, Table
from tapir.store.db import Store


def stage_section(store: Store, run_id: str) -> Section:
    from tapir.runs import run_details

    details = run_details(store, run_id)
    section = Section("stages", "Stages: time, calls, tokens, cost, failures")
    rows = []
    totals = {k: 0.0 for k in ("ok", "failed", "calls", "tokens", "cost", "truncated", "seconds")}
    for s in details["stages"]:
        status = f"reused ({s['reused_from']})" if s.get("reused_from") else s["status"]
        values = {k: s.get(k) or 0 for k in ("ok", "failed", "calls", "tokens", "cost", "truncated")}
        values["seconds"] = s.get("seconds") or 0.0
        for k in totals:
            totals[k] += values[k]
        rows.append([s["name"], s["round"], status, values["ok"], values["failed"], values["calls"],
                     values["tokens"], f"{values['cost']:.4f}", values["truncated"], f"{values['seconds']:.1f}",
                     (s.get("key") or "")[:12]])
    rows.append(["total", "", "", int(totals["ok"]), int(totals["failed"]), int(totals["calls"]),
                 int(totals["tokens"]), f"{totals['cost']:.4f}", int(totals["truncated"]),
                 f"{totals['seconds']:.1f}", ""])
    section.tables.append(Table("Per stage", ["stage", "round", "status", "ok", "failed", "calls", "tokens",
                                              "cost $", "truncated", "seconds", "key"], rows, css="num"))
    errors = [[s["name"], s["round"], (s["info"].get("error") or "?").splitlines()[0][:300]]
              for s in details["stages"] if s["status"] == "failed"]
    if errors:
        section.tables.append(Table("Failed stages", ["stage", "round", "error"], errors))
    failures = [[f["stage"], f["round"], f["kind"], f["count"], f["example_item"], (f["example"] or "")[:300]]
                for f in details["failures"]]
    section.tables.append(Table("Failed items by kind", ["stage", "round", "kind", "count", "example item",
                                                         "example reason"], failures,
                                note=None if failures else "no failed items"))
    calls = [[r["role"], r["calls"], r["errors"] or 0, r["tokens"], f"{r['cost']:.4f}"]
             for r in details["calls_by_role"]]
    section.tables.append(Table("LLM calls by role", ["role", "calls", "errors", "tokens", "cost $"], calls,
                                note=None if calls else "no recorded LLM calls (local models are not logged as calls)"))
    return section
