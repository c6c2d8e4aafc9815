"""The filters' report: what each rule removed (in order) and failed (alone), overall and per group.

``kept + Σ removed == rows in`` always holds: :func:`~align_lite.data.filters.apply_filters`
attributes each dropped row to the first rule it fails, and rows dropped while reading count as
the ``bad_input`` rule.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from align_lite.data.records import require_columns

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class RuleOutcome:
    """One rule's line in the report."""

    rule: str
    description: str
    removed: int  # rows dropped by this rule and by no earlier one
    failed: int  # rows failing this rule, whatever earlier rules said
    examples: list[str] = field(default_factory=list)


@dataclass
class FilterReport:
    """What :func:`apply_filters` did: ``rows_in == kept + Σ removed``."""

    rows_in: int
    kept: int
    rules: list[RuleOutcome]
    by_group: GroupReport | None = None  # the same counts per value of a column (report_by)
    bad_input_by_reason: dict[str, int] = field(default_factory=dict)  # the bad_input rule's rows, by reason

    @property
    def removed(self) -> int:
        return sum(r.removed for r in self.rules)

    def to_dict(self) -> dict:
        out = {
            "rows_in": self.rows_in,
            "kept": self.kept,
            "removed": {r.rule: r.removed for r in self.rules},
            "failed": {r.rule: r.failed for r in self.rules},
            "rules": [asdict(r) for r in self.rules],
            "bad_input_by_reason": dict(sorted(self.bad_input_by_reason.items())),
        }
        if self.by_group is not None:
            out["by_group"] = self.by_group.to_dict()
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    def to_markdown(self) -> str:
        lines = [
            "| rule | what it removes | removed (in order) | fails (alone) |",
            "|---|---|---:|---:|",
        ]
        lines += [
            f"| {r.rule} | {r.description} | {r.removed:,} | {r.failed:,} |" for r in self.rules
        ]
        lines.append(f"| **kept** | | **{self.kept:,}** of {self.rows_in:,} | |")
        if self.by_group is not None:
            lines += ["", self.by_group.to_markdown()]
        return "\n".join(lines)


@dataclass
class GroupCounts:
    """One group's line of a :class:`GroupReport`: ``rows_in == kept + Σ removed``."""

    group: str
    rows_in: int
    kept: int
    removed: dict[str, int]  # rule -> rows of the group dropped by it and by no earlier rule


@dataclass
class GroupReport:
    """A :class:`FilterReport` broken down by the values of one column (e.g. ``language``).

    Each row is attributed to its first failed rule, as in the report; the groups' ``rows_in``
    add up to the filtered table's rows, i.e. the report's ``rows_in`` less ``bad_input``
    (rows dropped while reading belong to no group). Groups are sorted by name; a missing
    value is the group ``"(missing)"``.
    """

    column: str
    rules: list[str]
    groups: list[GroupCounts]

    def total(self) -> GroupCounts:
        """The sum over all groups."""
        removed = {rule: sum(g.removed[rule] for g in self.groups) for rule in self.rules}
        return GroupCounts("total", sum(g.rows_in for g in self.groups),
                           sum(g.kept for g in self.groups), removed)

    def to_dict(self) -> dict:
        return {"column": self.column, "rules": self.rules,
                "groups": {g.group: {"rows_in": g.rows_in, "kept": g.kept, "removed": g.removed}
                           for g in self.groups}}

    def to_frame(self) -> pd.DataFrame:
        """One row per group: ``rows_in``, rows removed by each rule, ``kept`` (needs pandas)."""
        import pandas as pd

        records = [{"rows_in": g.rows_in, **g.removed, "kept": g.kept} for g in self.groups]
        index = pd.Index([g.group for g in self.groups], name=self.column)
        return pd.DataFrame(records, index=index, columns=["rows_in", *self.rules, "kept"])

    def to_markdown(self) -> str:
        """A Markdown table: one line per group and a total; removed counts in rule order."""
        lines = [f"| {self.column} | rows | " + " | ".join(self.rules) + " | kept | kept % |",
                 "|---|" + "---:|" * (len(self.rules) + 3)]
        total = self.total()
        for g, name in [*((g, g.group) for g in self.groups), (total, "**total**")]:
            share = f"{100 * g.kept / g.rows_in:.1f}" if g.rows_in else "–"
            removed = " | ".join(f"{g.removed[rule]:,}" for rule in self.rules)
            lines.append(f"| {name} | {g.rows_in:,} | {removed} | {g.kept:,} | {share} |")
        return "\n".join(lines)


def report_by(table: pa.Table, result: FilterResult, column: str) -> GroupReport:
    """The per-rule counts of ``result`` (:func:`apply_filters` of ``table``) per value of ``column``."""
    require_columns(table, (column,))
    if len(result.first_failed) != table.num_rows:
        n_result = len(result.first_failed)
        raise ValueError(f"the result covers {n_result} rows, the table {table.num_rows}")
    rules = [r.rule for r in result.report.rules if r.rule != "bad_input"]
    codes, values = _group_codes(table.column(column))
    width = len(rules) + 1  # column 0: kept, then one per rule
    cells = codes * width + result.first_failed.astype(np.int64) + 1
    counts = np.bincount(cells, minlength=len(values) * width).reshape(len(values), width)
    groups = [
        GroupCounts(name, int(row.sum()), int(row[0]), dict(zip(rules, map(int, row[1:]))))
        for name, row in zip(values, counts)
    ]
    return GroupReport(column, rules, sorted(groups, key=lambda g: g.group))


def _group_codes(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, list[str]]:
    """(N,) int64 group of each row and the group names (missing values: ``"(missing)"``)."""
    encoded = pc.dictionary_encode(column, null_encoding="encode")
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks() if encoded.num_chunks else pa.array([], encoded.type)
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    names = ["(missing)" if v is None else str(v) for v in encoded.dictionary.to_pylist()]
    return codes, names


@dataclass
class FilterResult:
    kept: pa.Table
    report: FilterReport
    first_failed: np.ndarray  # (N,) int8: index of the first failed rule, -1 when kept
