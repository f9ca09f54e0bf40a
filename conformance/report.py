"""The kit's verdict, clause by clause: the table, the JSON report, the exit status.

Tests record their outcomes here as they finish (:meth:`Results.record`).  A
clause is

* *failed* when any test found it broken (its own test, or another test that
  saw it broken on the way);
* *inconclusive* when no test found it broken but at least one test could not
  decide it: it waited for positive evidence (a close, a reply, an exit) and
  saw none it could trust (:class:`~.failures.Inconclusive`);
* *passed* when its tests passed;
* *skipped* when it was not decided for another reason: no test on the wire
  (see :mod:`.untested`), its mode not selected, or its test blocked by
  another clause's failure or by an error of the kit.

The table is printed h2spec-style at the end of the run; ``--conformance-report
PATH`` writes schema 2 (see :func:`report_dict`), which ``--conformance-html``
renders.

Exit statuses (:data:`EXIT_STATUSES`) are the kit's public interface: 0 the
target conforms, 1 it does not, 2 the run was interrupted, 3 the kit itself
failed, 4 usage or configuration error, 5 inconclusive.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from skyllh_cluster.clauses import CLAUSES, Clause, Level
from skyllh_cluster.tls import TLS_CLAUSES

from .transcript import NOTE, Transcript
from .untested import NOT_ON_THE_WIRE

__all__ = [
    "PASSED",
    "FAILED",
    "INCONCLUSIVE",
    "SKIPPED",
    "BLOCKED",
    "ERROR",
    "EXIT_CONFORMS",
    "EXIT_DOES_NOT_CONFORM",
    "EXIT_INTERRUPTED",
    "EXIT_KIT_ERROR",
    "EXIT_USAGE",
    "EXIT_INCONCLUSIVE",
    "EXIT_STATUSES",
    "Record",
    "ClauseRow",
    "Results",
    "render_table",
    "clause_line",
    "verdict_line",
    "report_dict",
    "report_json",
    "MODE_OPTIONS",
    "CLAUSE_TABLE",
    "first_line",
]

PASSED, FAILED, INCONCLUSIVE, SKIPPED = "passed", "failed", "inconclusive", "skipped"
BLOCKED, ERROR = "blocked", "error"

EXIT_CONFORMS = 0
EXIT_DOES_NOT_CONFORM = 1
EXIT_INTERRUPTED = 2
EXIT_KIT_ERROR = 3
EXIT_USAGE = 4
EXIT_INCONCLUSIVE = 5

#: The kit's exit statuses and what each means (printed by ``--help``).
EXIT_STATUSES: Tuple[Tuple[int, str], ...] = (
    (EXIT_CONFORMS, "the target conforms: every clause tested passed"),
    (EXIT_DOES_NOT_CONFORM, "the target does not conform: a MUST clause failed (or a SHOULD clause, with --strict-conformance), "
     "or it does not speak the protocol at all (pre-flight)"),
    (EXIT_INTERRUPTED, "the run was interrupted (Ctrl-C); the partial table is marked as such"),
    (EXIT_KIT_ERROR, "the kit itself failed (KIT ERROR): no verdict on the target"),
    (EXIT_USAGE, "usage or configuration error: bad option, nothing listening at --target, "
     "--cn-command that cannot start or never connects"),
    (EXIT_INCONCLUSIVE, "inconclusive: nothing failed, but a MUST clause (or a SHOULD clause, with "
     "--strict-conformance) could not be decided"),
)

#: The kit's clause table: the protocol's clauses (spec/protocol.md), then the
#: TLS profile's (spec/tls-profile.md), in spec order.  Every report lists them all.
CLAUSE_TABLE: Dict[str, Clause] = {**CLAUSES, **TLS_CLAUSES}

#: The option that selects each mode, for "not tested" details.
MODE_OPTIONS = {"master": "--target HOST:PORT", "cn": "--cn-command CMD"}


@dataclass(frozen=True)
class Record:
    """One test's word on one clause."""

    clause: str
    nodeid: str
    outcome: str  # PASSED, FAILED, INCONCLUSIVE, BLOCKED, SKIPPED or ERROR
    detail: str
    transcripts: Tuple[Transcript, ...] = ()


@dataclass(frozen=True)
class ClauseRow:
    """One line of the verdict."""

    id: str
    level: str
    title: str
    outcome: str  # PASSED, FAILED, INCONCLUSIVE or SKIPPED
    detail: str
    records: Tuple[Record, ...] = ()

    def as_json(self) -> Dict[str, Any]:
        """The clause's entry of the JSON report (schema 2)."""
        return {
            "id": self.id,
            "level": self.level,
            "title": self.title,
            "outcome": self.outcome,
            "detail": self.detail,
            "tests": [_test_json(r) for r in self.records],
        }


def _test_json(record: Record) -> Dict[str, Any]:
    return {
        "nodeid": record.nodeid,
        "outcome": record.outcome,
        "detail": record.detail,
        "transcripts": [_transcript_json(t) for t in record.transcripts],
    }


def _transcript_json(transcript: Transcript) -> Dict[str, Any]:
    entries: List[Dict[str, Any]] = []
    for entry in transcript.entries:
        if entry.direction == NOTE:
            entries.append({"direction": "note", "at": round(entry.at, 6), "text": entry.text})
        else:
            direction = "sent" if entry.direction == "->" else "received"
            entries.append({"direction": direction, "at": round(entry.at, 6), "offset": entry.offset, "hex": entry.data.hex()})
    return {"label": transcript.label, "entries": entries}


@dataclass
class Results:
    """Everything the kit's tests said during one run."""

    records: List[Record] = field(default_factory=list)
    kit_errors: List[str] = field(default_factory=list)
    #: Clause -> modes ("master", "cn") that have a kit test for it.
    tests_by_mode: Dict[str, Set[str]] = field(default_factory=dict)
    #: Clauses whose tests were collected and then left out by --conformance-clause.
    not_selected: Set[str] = field(default_factory=set)
    #: Set when the pre-flight check stopped the run: the reason every other clause is untested.
    stopped: Optional[str] = None
    #: Set when the run was interrupted: clauses not reached are "not tested: interrupted".
    interrupted: bool = False

    def record(
        self, clause: str, nodeid: str, outcome: str, detail: str, transcripts: Iterable[Transcript] = ()
    ) -> None:
        """Record one test's outcome for one clause."""
        self.records.append(Record(clause, nodeid, outcome, detail, tuple(transcripts)))

    def rows(self, modes: Iterable[str]) -> List[ClauseRow]:
        """The verdict for every clause of the table, in table order."""
        modes = set(modes)
        by_clause: Dict[str, List[Record]] = {}
        for rec in self.records:
            by_clause.setdefault(rec.clause, []).append(rec)
        return [self._row(cid, by_clause.get(cid, []), modes) for cid in CLAUSE_TABLE]

    def _row(self, cid: str, records: List[Record], modes: Set[str]) -> ClauseRow:
        clause = CLAUSE_TABLE[cid]
        outcome, detail = self._verdict(cid, records, modes)
        return ClauseRow(cid, clause.level.value, clause.title, outcome, detail, tuple(records))

    def _verdict(self, cid: str, records: List[Record], modes: Set[str]) -> Tuple[str, str]:
        def first(outcome: str) -> List[Record]:
            return [r for r in records if r.outcome == outcome]

        failed = first(FAILED)
        if failed:
            more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
            return FAILED, failed[0].detail + more
        undecided = first(INCONCLUSIVE)
        if undecided:
            more = f" (and {len(undecided) - 1} more)" if len(undecided) > 1 else ""
            return INCONCLUSIVE, undecided[0].detail + more
        errors = first(ERROR)
        if errors:
            return SKIPPED, f"not decided: the kit itself failed: {errors[0].detail}"
        blocked = first(BLOCKED)
        if blocked:
            return SKIPPED, f"not decided: {blocked[0].detail}"
        passed = first(PASSED)
        if passed:
            many = f" ({len(passed)} tests)" if len(passed) > 1 else ""
            return PASSED, passed[0].detail + many
        skipped = first(SKIPPED)
        if skipped:
            return SKIPPED, skipped[0].detail
        if cid in NOT_ON_THE_WIRE:
            return SKIPPED, NOT_ON_THE_WIRE[cid]
        if self.stopped is not None and cid in self.tests_by_mode:
            return SKIPPED, f"not tested: {self.stopped}"
        if self.interrupted and self.tests_by_mode.get(cid, set()) & modes and cid not in self.not_selected:
            return SKIPPED, "not tested: the run was interrupted before its tests"
        if cid in self.not_selected:
            return SKIPPED, "not tested: not selected by --conformance-clause"
        have = self.tests_by_mode.get(cid, set())
        missing = sorted(have - modes)
        if missing:
            return SKIPPED, "not tested: needs " + " or ".join(MODE_OPTIONS[m] for m in missing)
        return SKIPPED, "not tested in this run"

    def exit_status(self, modes: Iterable[str], strict: bool) -> int:
        """0 conforms, 1 a counted clause failed, 5 a counted clause is inconclusive (failures win)."""
        counted = [r for r in self.rows(modes) if strict or r.level == Level.MUST.value]
        if any(r.outcome == FAILED for r in counted):
            return EXIT_DOES_NOT_CONFORM
        if any(r.outcome == INCONCLUSIVE for r in counted):
            return EXIT_INCONCLUSIVE
        return EXIT_CONFORMS


#: The mark of each outcome in the table and the progress lines: h2spec's on a
#: terminal that takes UTF-8, ASCII otherwise.
MARKS = {PASSED: "✓", FAILED: "×", INCONCLUSIVE: "?", SKIPPED: "-"}
ASCII_MARKS = {PASSED: "ok", FAILED: "XX", INCONCLUSIVE: "??", SKIPPED: "--"}


def clause_line(row: ClauseRow, *, ascii_only: bool = False) -> str:
    """One clause as one line: mark, ID, level, outcome, title."""
    mark = (ASCII_MARKS if ascii_only else MARKS)[row.outcome]
    return f"{mark:<2} {row.id:<7} {row.level:<6} {row.outcome:<12} {row.title}"


def render_table(
    target: str,
    rows: List[ClauseRow],
    strict: bool,
    width: int = 100,
    *,
    interrupted: bool = False,
    ascii_only: bool = False,
    where: Optional[Dict[str, str]] = None,
) -> str:
    """The h2spec-style table: one line per clause, its evidence under it.

    ``where`` maps clause IDs to where the clause can be read; it is shown
    under every failed and inconclusive clause.
    """
    head = f"SkyLLH cluster protocol conformance of {target}"
    if interrupted:
        head += " -- INTERRUPTED: partial results, not a verdict"
    lines = [head, ""]
    for row in rows:
        lines.append("  " + clause_line(row, ascii_only=ascii_only))
        if row.outcome != PASSED or row.detail:
            detail = row.detail if len(row.detail) <= width else row.detail[: width - 3] + "..."
            lines.append(f"{'':>14}-> {detail}")
        if where and row.outcome in (FAILED, INCONCLUSIVE) and row.id in where:
            lines.append(f"{'':>14}   read the clause: {where[row.id]}")
    lines += ["", summary_line(rows, strict, interrupted=interrupted)]
    return "\n".join(lines)


def counts(rows: Sequence[ClauseRow]) -> Dict[str, int]:
    """How many clauses have each outcome."""
    return {o: sum(1 for r in rows if r.outcome == o) for o in (PASSED, FAILED, INCONCLUSIVE, SKIPPED)}


def summary_line(rows: Sequence[ClauseRow], strict: bool, *, interrupted: bool = False) -> str:
    """The last line of the table."""
    n = counts(rows)
    must = sum(1 for r in rows if r.outcome == FAILED and r.level == Level.MUST.value)
    should = n[FAILED] - must
    text = (
        f"{len(rows)} clauses: {n[PASSED]} passed, {n[FAILED]} failed ({must} MUST, {should} SHOULD), "
        f"{n[INCONCLUSIVE]} inconclusive, {n[SKIPPED]} skipped"
        + ("; SHOULD failures count (--strict-conformance)" if strict else "; SHOULD failures do not fail the run")
    )
    if interrupted:
        text += "; INTERRUPTED before the end"
    return text


def verdict_line(status: int, rows: Sequence[ClauseRow], strict: bool) -> str:
    """The last line of a kit run: the verdict on the target and the exit status that carries it."""
    def ids(outcome: str, counted: bool) -> str:
        chosen = [r.id for r in rows if r.outcome == outcome and (strict or r.level == Level.MUST.value) == counted]
        return ", ".join(chosen)

    if status == EXIT_CONFORMS:
        text = "CONFORMS"
        lenient = ids(FAILED, False)
        if lenient:
            text += f" (SHOULD clauses failed, which count only with --strict-conformance: {lenient})"
    elif status == EXIT_DOES_NOT_CONFORM:
        failed = ids(FAILED, True)
        text = "DOES NOT CONFORM" + (f": {failed} failed" if failed else "")
    elif status == EXIT_INTERRUPTED:
        text = "none, the run was INTERRUPTED"
    elif status == EXIT_KIT_ERROR:
        text = "none, the kit itself failed (KIT ERROR)"
    elif status == EXIT_INCONCLUSIVE:
        text = f"INCONCLUSIVE: {ids(INCONCLUSIVE, True)} could not be decided"
    else:
        text = "none"
    return f"verdict: {text} (exit status {status})"


def report_dict(
    *,
    kit: str,
    target: str,
    modes: Iterable[str],
    strict: bool,
    started: float,
    duration: float,
    interrupted: bool,
    exit_status: int,
    rows: List[ClauseRow],
) -> Dict[str, Any]:
    """The JSON report, schema 2 (see ``REPORT-SCHEMA``: the kit's decided interface)."""
    n = counts(rows)
    return {
        "schema": 2,
        "kit": kit,
        "target": target,
        "modes": [m for m in ("master", "cn") if m in set(modes)],
        "strict": bool(strict),
        "started": datetime.datetime.fromtimestamp(started, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "duration_s": round(duration, 3),
        "interrupted": bool(interrupted),
        "exit_status": int(exit_status),
        "summary": {"passed": n[PASSED], "failed": n[FAILED], "inconclusive": n[INCONCLUSIVE], "skipped": n[SKIPPED]},
        "clauses": [row.as_json() for row in rows],
    }


def report_json(report: Dict[str, Any]) -> str:
    """The report as JSON text."""
    return json.dumps(report, indent=2, ensure_ascii=False)


def first_line(text: Optional[str]) -> str:
    """The first non-empty line of a docstring, or ''."""
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()
    return ""
