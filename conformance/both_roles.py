"""Both roles at once: ``python -m skyllh_cluster.conformance --target ... --cn-command ...``.

A master and a compute node under test are independent targets, and most of
the kit's time is spent waiting on one of them (a registration bound, a
node's live time, a node process starting).  So when both are given, the
kit runs one pytest session per role, side by side in two processes, passes
their progress lines through as they come, and merges their JSON reports
into one verdict: one table, one report, one HTML file, one exit status.

Each child is this same command with one role; a Ctrl-C is passed on to
both (by pid), and the partial table is marked as interrupted.

The compute-node role waits most (each check starts a node process and
waits for it), so unless the run is already narrowed (``--conformance-clause``,
``-k``, ``-m``) it is split in two sessions by clause
(:data:`SECOND_NODE_SESSION` and the rest), three children in all.  A
clause is checked in exactly one of them; a line that both node sessions
print (a pre-flight stop) is shown once.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from skyllh_cluster.clauses import Level

from .report import (
    CLAUSE_TABLE,
    EXIT_CONFORMS,
    EXIT_DOES_NOT_CONFORM,
    EXIT_INCONCLUSIVE,
    EXIT_INTERRUPTED,
    EXIT_KIT_ERROR,
    EXIT_USAGE,
    FAILED,
    INCONCLUSIVE,
    PASSED,
    SKIPPED,
    ClauseRow,
    counts,
    render_table,
    verdict_line,
)

__all__ = ["run_both_roles", "merge_reports", "SECOND_NODE_SESSION", "node_sessions"]

#: The compute-node clauses checked in the second node session: about half
#: the role's wall time.  The receiver clauses (ENC-1 to VAL-3) share one
#: run of bad frames, so they stay together, in the first session.
SECOND_NODE_SESSION = ("CN-4", "CN-6", "CN-9", "ERR-1")

#: Which clause outcome wins when the two roles disagree.
_PRECEDENCE = {FAILED: 3, INCONCLUSIVE: 2, PASSED: 1, SKIPPED: 0}


def merge_reports(master: Dict[str, Any], node: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The clause entries of both roles' reports, merged clause by clause.

    A clause's outcome is the worst decided one (failed, then inconclusive,
    then passed); it is skipped only when both roles skipped it.  Tests of
    both roles are kept.
    """
    by_id = {c["id"]: c for c in node.get("clauses", [])}
    merged = []
    for entry in master.get("clauses", []):
        other = by_id.get(entry["id"], entry)
        pick = max((entry, other), key=lambda c: _PRECEDENCE.get(c["outcome"], 0))
        if pick["outcome"] == SKIPPED and entry["outcome"] == SKIPPED and "not tested: needs" in entry["detail"]:
            pick = other
        merged.append({**pick, "tests": list(entry.get("tests", [])) + (list(other.get("tests", [])) if other is not entry else [])})
    return merged


def node_sessions(node_args: List[str], narrowed: bool) -> List[List[str]]:
    """The compute-node role's sessions: one when ``narrowed``, else two (see the module docstring)."""
    if narrowed:
        return [node_args]
    second = list(SECOND_NODE_SESSION)
    first = [cid for cid in CLAUSE_TABLE if cid not in second]
    return [node_args + [f"--conformance-clause={','.join(first)}"],
            node_args + [f"--conformance-clause={','.join(second)}"]]


def _exit_status(statuses: Sequence[int], clauses: List[Dict[str, Any]], strict: bool) -> int:
    for code in (EXIT_USAGE, EXIT_KIT_ERROR, EXIT_INTERRUPTED):
        if code in statuses:
            return code
    counted = [c for c in clauses if strict or c["level"] == Level.MUST.value]
    if any(c["outcome"] == FAILED for c in counted):
        return EXIT_DOES_NOT_CONFORM
    if any(c["outcome"] == INCONCLUSIVE for c in counted):
        return EXIT_INCONCLUSIVE
    return EXIT_CONFORMS


def _pump(stream: Any, out: Any, shown: Optional[Dict[str, int]] = None, me: int = 0) -> None:
    """Copy a child's lines to ``out``; with ``shown``, a line another child already showed is left out.

    Lines are compared without their numbers: the two node sessions' pre-flight
    stops differ only in the kit's port, for example.
    """
    for line in stream:
        if not line.strip():
            continue  # a child's blank line before the table it does not print
        if shown is not None:
            with _SHOWN_LOCK:
                if shown.setdefault(re.sub(r"\d+", "#", line), me) != me:
                    continue
        out.write(line)
        out.flush()


_SHOWN_LOCK = threading.Lock()


def run_both_roles(
    target_args: List[str],
    node_args: List[str],
    common: List[str],
    *,
    report_path: Optional[str],
    html_path: Optional[str],
    strict: bool,
    target_text: str,
    narrowed: bool = True,
) -> int:
    """Run the master role and the compute-node role side by side; return the merged exit status.

    Unless ``narrowed``, the compute-node role runs as two sessions (:func:`node_sessions`).
    """
    started_wall, started = time.time(), time.monotonic()
    sessions = [("master", target_args)] + [("cn", args) for args in node_sessions(node_args, narrowed)]
    shown: Dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="skyllh-kit-") as tmp:
        children = []
        for n, (role, args) in enumerate(sessions):
            report = str(Path(tmp) / f"{role}-{n}.json")
            argv = [sys.executable, "-m", "skyllh_cluster.conformance", *args, *common,
                    "--conformance-report", report, "--conformance-no-table"]
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
            dedupe = shown if role == "cn" and len(sessions) > 2 else None
            pump = threading.Thread(target=_pump, args=(proc.stdout, sys.stdout, dedupe, n), daemon=True)
            pump.start()
            children.append((role, proc, report, pump))
        interrupted = False
        try:
            for _, proc, _, _ in children:
                proc.wait()
        except KeyboardInterrupt:
            interrupted = True
            for _, proc, _, _ in children:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGINT)
            for _, proc, _, _ in children:
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        for _, _, _, pump in children:
            pump.join(5)
        statuses = [proc.returncode for _, proc, _, _ in children]
        reports = [json.loads(Path(r).read_text()) if Path(r).exists() else {} for _, _, r, _ in children]
    if not all(reports) and not interrupted:
        return max(statuses) if EXIT_USAGE not in statuses else EXIT_USAGE
    # Interrupted, a session may have been cut before it could write a report
    # (still starting up): the table is then made of the sessions that did.
    reports = [r for r in reports if r]
    if not reports:
        print("\nINTERRUPTED before any session reported: no clause was decided")
        return EXIT_INTERRUPTED
    merged = reports[0]
    for other in reports[1:]:
        merged = {**merged, "clauses": merge_reports(merged, other)}
    clauses = merged["clauses"]
    status = EXIT_INTERRUPTED if interrupted else _exit_status(statuses, clauses, strict)
    rows = [ClauseRow(c["id"], c["level"], c["title"], c["outcome"], c["detail"]) for c in clauses]
    where = _where(rows)
    ascii_only = (getattr(sys.stdout, "encoding", "") or "").lower().replace("-", "") != "utf8"
    print("\n" + render_table(target_text, rows, strict, interrupted=status == EXIT_INTERRUPTED,
                              ascii_only=ascii_only, where=where))
    print(f"kit run time: {time.monotonic() - started:.1f} s (both roles side by side)")
    print(verdict_line(status, rows, strict))
    n = counts(rows)
    report = {
        **reports[0],
        "target": target_text,
        "modes": ["master", "cn"],
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started_wall)),
        "duration_s": round(time.monotonic() - started, 3),
        "interrupted": status == EXIT_INTERRUPTED,
        "exit_status": status,
        "summary": {"passed": n[PASSED], "failed": n[FAILED], "inconclusive": n[INCONCLUSIVE], "skipped": n[SKIPPED]},
        "clauses": clauses,
    }
    if report_path:
        Path(report_path).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if html_path:
        from .html_report import write_html_report

        write_html_report(html_path, report)
    return status


def _where(rows: List[ClauseRow]) -> Dict[str, str]:
    from .explain import clause_location

    return {r.id: clause_location(r.id) for r in rows if r.outcome in (FAILED, INCONCLUSIVE) and r.id in CLAUSE_TABLE}
