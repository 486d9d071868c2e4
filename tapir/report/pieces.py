"""What a report page is made of: tables, figures, sections, the report."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[Any]]
    note: str | None = None
    css: str = ""


@dataclass
class Figure:
    title: str
    caption: str
    png: bytes | None = None
    note: str | None = None  # why there is no image


@dataclass
class Section:
    id: str
    title: str
    intro: str = ""
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class Report:
    run: dict[str, Any]
    sections: list[Section]
    generated_at: str

    @property
    def figures(self) -> list[Figure]:
        return [f for s in self.sections for f in s.figures]

    @property
    def tables(self) -> list[Table]:
        return [t for s in self.sections for t in s.tables]
