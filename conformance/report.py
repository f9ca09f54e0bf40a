"""The kit's verdict, clause by clause: the table, the JSON report, the exit status.

Tests record their outcomes here as they finish (:meth:`Results.record`).  A
clause *failed* when any test found it broken (its own test, or another test
that saw it broken on the way); *passed* when its tests passed; *skipped*
when it was not decided: no test on the wire (see :mod:`.untested`), its
mode not selected, or its test blocked by another clause's failure.

The table is printed h2spec-style at the end of the run; ``--conformance-report
PATH`` writes the same as JSON::

    {"target": "127.0.0.1:9999",
     "clauses": [{"id": "FRM-1", "level": "MUST", "title": "...",
                  "outcome": "passed", "detail": "..."}, ...]}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Set

from skyllh_cluster.clauses import CLAUSES, Level

from .untested import NOT_ON_THE_WIRE

__all__ = ["Record", "ClauseRow", "Results", "render_table", "report_json", "MODE_OPTIONS"]

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"
BLOCKED, ERROR = "blocked", "error"

#: The option that selects each mode, for "not tested" details.
MODE_OPTIONS = {"master": "--target HOST:PORT", "cn": "--cn-command CMD"}


@dataclass(frozen=True)
class Record:
    """One test's word on one clause."""

    clause: str
    nodeid: str
    outcome: str  # PASSED, FAILED, BLOCKED, SKIPPED or ERROR
    detail: str


@dataclass(frozen=True)
class ClauseRow:
    """One line of the verdict."""

    id: str
    level: str
    title: str
    outcome: str  # PASSED, FAILED or SKIPPED
    detail: str

    def as_json(self) -> Dict[str, str]:
        return {"id": self.id, "level": self.level, "title": self.title, "outcome": self.outcome, "detail": self.detail}


@dataclass
class Results:
    """Everything the kit's tests said during one run."""

    records: List[Record] = field(default_factory=list)
    kit_errors: List[str] = field(default_factory=list)
    #: Clause -> modes ("master", "cn") that have a kit test for it.
    tests_by_mode: Dict[str, Set[str]] = field(default_factory=dict)
    #: Clauses whose tests were collected and then left out by --conformance-clause.
    not_selected: Set[str] = field(default_factory=set)

    def record(self, clause: str, nodeid: str, outcome: str, detail: str) -> None:
        self.records.append(Record(clause, nodeid, outcome, detail))

    def rows(self, modes: Iterable[str]) -> List[ClauseRow]:
        """The verdict for every clause of the table, in table order."""
        modes = set(modes)
        by_clause: Dict[str, List[Record]] = {}
        for rec in self.records:
            by_clause.setdefault(rec.clause, []).append(rec)
        return [self._row(cid, by_clause.get(cid, []), modes) for cid in CLAUSES]

    def _row(self, cid: str, records: List[Record], modes: Set[str]) -> ClauseRow:
        clause = CLAUSES[cid]
        outcome, detail = self._verdict(cid, records, modes)
        return ClauseRow(cid, clause.level.value, clause.title, outcome, detail)

    def _verdict(self, cid: str, records: List[Record], modes: Set[str]):
        failed = [r for r in records if r.outcome == FAILED]
        if failed:
            more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
            return FAILED, failed[0].detail + more
        errors = [r for r in records if r.outcome == ERROR]
        if errors:
            return SKIPPED, f"not decided: the kit itself failed: {errors[0].detail}"
        blocked = [r for r in records if r.outcome == BLOCKED]
        if blocked:
            return SKIPPED, f"not decided: {blocked[0].detail}"
        passed = [r for r in records if r.outcome == PASSED]
        if passed:
            many = f" ({len(passed)} tests)" if len(passed) > 1 else ""
            return PASSED, passed[0].detail + many
        skipped = [r for r in records if r.outcome == SKIPPED]
        if skipped:
            return SKIPPED, skipped[0].detail
        if cid in NOT_ON_THE_WIRE:
            return SKIPPED, NOT_ON_THE_WIRE[cid]
        if cid in self.not_selected:
            return SKIPPED, "not tested: not selected by --conformance-clause"
        have = self.tests_by_mode.get(cid, set())
        missing = sorted(have - modes)
        if missing:
            return SKIPPED, "not tested: needs " + " or ".join(MODE_OPTIONS[m] for m in missing)
        return SKIPPED, "not tested in this run"

    def exit_status(self, modes: Iterable[str], strict: bool) -> int:
        """0 if the target conforms, 1 if a clause failed (SHOULD only when strict)."""
        for row in self.rows(modes):
            if row.outcome == FAILED and (strict or row.level == Level.MUST.value):
                return 1
        return 0


_MARK = {PASSED: "ok  ", FAILED: "FAIL", SKIPPED: "-   "}


def render_table(target: str, rows: List[ClauseRow], strict: bool, width: int = 100) -> str:
    """The h2spec-style table: one line per clause, and its evidence under it."""
    lines = [f"SkyLLH cluster protocol conformance of {target}", ""]
    for row in rows:
        lines.append(f"  {_MARK[row.outcome]} {row.id:<7} {row.level:<6} {row.outcome:<7} {row.title}")
        if row.outcome != PASSED or row.detail:
            detail = row.detail if len(row.detail) <= width else row.detail[: width - 3] + "..."
            lines.append(f"{'':>24}-> {detail}")
    counts = {o: sum(1 for r in rows if r.outcome == o) for o in (PASSED, FAILED, SKIPPED)}
    must = sum(1 for r in rows if r.outcome == FAILED and r.level == Level.MUST.value)
    should = counts[FAILED] - must
    lines += [
        "",
        f"{len(rows)} clauses: {counts[PASSED]} passed, {counts[FAILED]} failed "
        f"({must} MUST, {should} SHOULD), {counts[SKIPPED]} skipped"
        + ("; SHOULD failures count (--strict-conformance)" if strict else "; SHOULD failures do not fail the run"),
    ]
    return "\n".join(lines)


def report_json(target: str, rows: List[ClauseRow]) -> str:
    """The JSON report: ``{"target": ..., "clauses": [...]}``."""
    return json.dumps({"target": target, "clauses": [row.as_json() for row in rows]}, indent=2, ensure_ascii=False)


def first_line(text: Optional[str]) -> str:
    """The first non-empty line of a docstring, or ''."""
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()
    return ""
