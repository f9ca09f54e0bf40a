"""The conformance kit's pytest plugin: options, the ``clause`` marker, fixtures and the verdict.

pytest loads this module in every run in an environment where
``skyllh-cluster`` is installed (the ``pytest11`` entry point).  It stays inert
unless the kit's own tests are collected: it only adds options and a marker.

When they are collected, it

* refuses to run without ``--target HOST:PORT`` or ``--cn-command CMD``
  (usage error, exit status 4), and deselects the tests of the mode that was
  not chosen;
* gives the tests the ``kit`` fixture (:class:`~.session.Kit`) and the shared
  scenario runs;
* records each test's outcome against its clause (``@pytest.mark.clause("MST-2")``)
  and tells a failure of the target (an ``AssertionError``, usually a
  :class:`~.failures.ClauseFailure`) from a failure of the kit (anything else);
* runs the pre-flight check (:mod:`.preflight`) before the first test: a
  target that does not speak the protocol stops the run with one line;
* records each test's outcome against its clause (``@pytest.mark.clause("MST-2")``)
  and tells a failure of the target (an ``AssertionError``, usually a
  :class:`~.failures.ClauseFailure`) from a check without evidence
  (:class:`~.failures.Inconclusive`) and from a failure of the kit (anything else);
* prints the clause table, writes ``--conformance-report`` (schema 2) and
  ``--conformance-html``, and adds ``clause`` and ``level`` properties for
  ``--junitxml``;
* sets the exit status (:data:`.report.EXIT_STATUSES`): 0 the target
  conforms, 1 it does not, 2 interrupted, 3 the kit itself failed, 4 usage or
  configuration error, 5 inconclusive.

The kit's tests are recognised by their directory: the kit's ``conftest.py``
announces the directory it sits in (:func:`register_kit_dir`), so a clone's
``conformance/`` is recognised whether the package is installed from it
(editable or not) or not installed at all.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any, Iterator, List, Optional, Set

import pytest

from .failures import ClauseFailure, Inconclusive, KitError
from .report import (
    CLAUSE_TABLE as CLAUSES,
    BLOCKED,
    ERROR,
    EXIT_INTERRUPTED,
    EXIT_KIT_ERROR,
    EXIT_USAGE,
    FAILED,
    INCONCLUSIVE,
    PASSED,
    SKIPPED,
    Results,
    first_line,
    clause_line,
    render_table,
    report_dict,
    report_json,
    verdict_line,
)
from .session import Kit, KitOptions, parse_address
from .tls import TLSSettings
from .untested import NOT_ON_THE_WIRE

__all__ = ["KIT_DIR", "is_kit_item", "register_kit_dir"]

logger = logging.getLogger(__name__)

KIT_DIR = Path(__file__).resolve().parent

#: Directories that hold the kit's tests: the installed package's, and any
#: copy whose conftest.py announced itself (a clone's ``conformance/``).
_KIT_DIRS: Set[Path] = {KIT_DIR}


def register_kit_dir(path: "Path | str") -> None:
    """Recognise the test modules in ``path`` as the kit's (called by the kit's conftest.py)."""
    _KIT_DIRS.add(Path(path).resolve())

#: The test modules of each mode, by file-name prefix.
_MODE_PREFIXES = {"master": "test_master_", "cn": "test_cn_"}

_STATE = pytest.StashKey["_KitState"]()

#: Exit status for "the kit itself broke" (pytest's own INTERNAL_ERROR).
KIT_BROKEN = EXIT_KIT_ERROR

USAGE = (
    "the SkyLLH cluster conformance kit needs a target: "
    "--target HOST:PORT (a master running the conformance scenario) and/or "
    '--cn-command "CMD {host} {port} {live_time}" (a compute node to start); '
    "see python -m skyllh_cluster.conformance --help"
)


class _KitState:
    """Per-run state, kept in ``config.stash`` (never in module globals)."""

    def __init__(self) -> None:
        self.active = False
        self.options: Optional[KitOptions] = None
        self.kit: Optional[Kit] = None
        self.results = Results()
        self.modes: Set[str] = set()
        self.other_failures = 0
        self.started = time.monotonic()
        self.started_wall = time.time()
        self.master_run: Any = None
        self.node_run: Any = None
        #: The one line that stopped the run before the tests (pre-flight), if any.
        self.stopped: Optional[str] = None
        self.interrupted = False
        self.listing = False
        #: Test node ID -> its clause; clause -> tests still to run (for progress lines).
        self.clause_of: dict = {}
        self.pending: dict = {}
        #: The kit's exit status, once the run is over.
        self.status: Optional[int] = None
        #: Whether the console is the kit's own (:mod:`.console`), not pytest's.
        self.kit_console = False


# -- options and marker --------------------------------------------------------------
def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("skyllh-cluster conformance", "SkyLLH cluster protocol conformance kit")
    group.addoption("--target", metavar="HOST:PORT", help="test the master at HOST:PORT (it runs the conformance scenario)")
    group.addoption(
        "--cn-command",
        metavar="CMD",
        help='test a compute node started by CMD; {host}, {port} and {live_time} are filled in, e.g. '
        '"python -m skyllh_cluster.compute_node {host} {port} --live-time {live_time}"',
    )
    group.addoption(
        "--listen", metavar="HOST:PORT", default="127.0.0.1:0", help="where the kit listens for compute nodes (default: 127.0.0.1:0)"
    )
    group.addoption(
        "--conformance-timeout", metavar="SECONDS", type=float, default=2.0, help="longest wait for any reply (default: 2)"
    )
    group.addoption(
        "--conformance-examples",
        metavar="N",
        type=int,
        default=10,
        help="Hypothesis examples per generated test; tests that start a process per example use N/5 (default: 10)",
    )
    group.addoption("--conformance-report", metavar="PATH", help="write the results as JSON (schema 2) to PATH")
    group.addoption("--conformance-html", metavar="PATH", help="write the results as one self-contained HTML file to PATH")
    group.addoption(
        "--conformance-no-table",
        action="store_true",
        help="print no clause table at the end (used when python -m skyllh_cluster.conformance merges two roles)",
    )
    group.addoption("--strict-conformance", action="store_true", help="SHOULD failures fail the run too")
    group.addoption(
        "--conformance-list",
        action="store_true",
        help="print the clauses and tests that would run for the given modes (all without --target/--cn-command), "
        "without touching a target",
    )
    group.addoption(
        "--conformance-clause", metavar="ID[,ID...]", action="append", default=[], help="run only the tests of these clauses"
    )
    group.addoption(
        "--registration-budget",
        metavar="SECONDS",
        type=float,
        default=5.0,
        help="how long a master may keep a connection that does not register (MST-7, FRM-6; default: 5)",
    )
    group.addoption(
        "--cn-startup-timeout",
        metavar="SECONDS",
        type=float,
        default=10.0,
        help="how long a started compute node may take to connect (default: 10)",
    )
    group.addoption(
        "--tls-ca",
        metavar="FILE",
        help="TLS profile: the CA of the master's certificate (master mode: every connection is TLS, verified "
        "against it); compute-node mode: require client certificates from this CA",
    )
    group.addoption(
        "--tls-cert",
        metavar="FILE",
        help="TLS profile: the kit's certificate; master mode: its client certificate (the master is in mutual TLS); "
        "compute-node mode: the kit's server certificate (for the --listen address): the kit serves TLS",
    )
    group.addoption("--tls-key", metavar="FILE", help="TLS profile: the key of --tls-cert (default: in --tls-cert)")
    group.addoption(
        "--cn-live-time",
        metavar="SECONDS",
        type=int,
        default=60,
        help="live time given to compute nodes whose test is not about live time (default: 60)",
    )


@pytest.hookimpl(trylast=True)  # after pytest's terminal plugin made its reporter
def pytest_configure(config: pytest.Config) -> None:
    from .console import install_kit_reporter, wants_kit_console

    _CONFIG["config"] = config
    config.addinivalue_line("markers", "clause(id): the protocol clause (e.g. MST-2) a conformance kit test checks")
    state = config.stash[_STATE] = _KitState()
    if wants_kit_console(config):
        install_kit_reporter(config)
        state.kit_console = True


def _state(config: pytest.Config) -> _KitState:
    return config.stash[_STATE]


def _options(config: pytest.Config) -> KitOptions:
    target = config.getoption("target")
    try:
        return KitOptions(
            target=parse_address(target, "--target") if target else None,
            cn_command=config.getoption("cn_command"),
            listen=parse_address(config.getoption("listen"), "--listen"),
            timeout=_positive(config.getoption("conformance_timeout"), "--conformance-timeout"),
            examples=max(1, int(config.getoption("conformance_examples"))),
            strict=bool(config.getoption("strict_conformance")),
            registration_budget=_positive(config.getoption("registration_budget"), "--registration-budget"),
            cn_startup_timeout=_positive(config.getoption("cn_startup_timeout"), "--cn-startup-timeout"),
            cn_live_time=int(_positive(config.getoption("cn_live_time"), "--cn-live-time")),
            seeded=config.getoption("hypothesis_seed", None) is not None,
            tls=_tls_settings(config),
        )
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None


def _tls_settings(config: pytest.Config) -> TLSSettings:
    settings = TLSSettings(config.getoption("tls_ca"), config.getoption("tls_cert"), config.getoption("tls_key"))
    settings.check()
    if settings.any and config.getoption("target") and not settings.master_mode:
        raise ValueError("a TLS master (--target) needs --tls-ca: the CA that signs its certificate")
    if settings.any and config.getoption("cn_command") and not settings.node_mode:
        raise ValueError("TLS compute nodes (--cn-command) need --tls-cert (and --tls-key): the kit's server certificate")
    return settings


def _positive(value: float, option: str) -> float:
    if not value > 0:
        raise ValueError(f"{option} must be positive, not {value!r}")
    return float(value)


# -- collection ----------------------------------------------------------------------
def is_kit_item(item: pytest.Item) -> bool:
    """Whether ``item`` is one of the kit's own tests (by file, whatever the import name)."""
    path = Path(str(getattr(item, "path", ""))).resolve()
    return path.parent in _KIT_DIRS and _mode_of(path.name) is not None


def _mode_of(filename: str) -> Optional[str]:
    for mode, prefix in _MODE_PREFIXES.items():
        if filename.startswith(prefix):
            return mode
    return None


def _item_clause(item: pytest.Item) -> str:
    marker = item.get_closest_marker("clause")
    if marker is None or len(marker.args) != 1 or marker.args[0] not in CLAUSES:
        raise KitError(f"kit test {item.nodeid} must carry exactly one known clause marker, got {marker!r}")
    return str(marker.args[0])


def _selected_clauses(config: pytest.Config) -> Optional[Set[str]]:
    raw = [part.strip() for value in config.getoption("conformance_clause") for part in value.split(",")]
    wanted = {part for part in raw if part}
    if not wanted:
        return None
    unknown = sorted(wanted - set(CLAUSES))
    if unknown:
        raise pytest.UsageError(f"--conformance-clause: unknown clause IDs {', '.join(unknown)}")
    return wanted


# Last, so that the progress lines count only the tests that -k and -m left.
@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: List[pytest.Item]) -> None:
    kit_items = [item for item in items if is_kit_item(item)]
    if not kit_items:
        return
    state = _state(config)
    options = _options(config)
    listing = bool(config.getoption("conformance_list"))
    if options.target is None and options.cn_command is None and not listing:
        raise pytest.UsageError(USAGE)
    state.active = True
    state.options = options
    state.modes = {mode for mode, chosen in (("master", options.target), ("cn", options.cn_command)) if chosen}
    if listing and not state.modes:
        state.modes = set(_MODE_PREFIXES)
    wanted = _selected_clauses(config)

    keep: List[pytest.Item] = []
    dropped: List[pytest.Item] = []
    for item in items:
        if item not in kit_items:
            keep.append(item)
            continue
        clause = _item_clause(item)
        mode = _mode_of(Path(str(item.path)).name)
        assert mode is not None
        state.results.tests_by_mode.setdefault(clause, set()).add(mode)
        item.user_properties.append(("clause", clause))
        item.user_properties.append(("level", CLAUSES[clause].level.value))
        if mode not in state.modes:
            dropped.append(item)
        elif wanted is not None and clause not in wanted:
            state.results.not_selected.add(clause)
            dropped.append(item)
        else:
            keep.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep
    for item in items:
        if is_kit_item(item):
            clause = _item_clause(item)
            state.clause_of[item.nodeid] = clause
            state.pending[clause] = state.pending.get(clause, 0) + 1
    if listing:
        _print_list(state, items)
        state.listing = True
        items[:] = []
        return
    state.kit = Kit(options)
    state.kit.selected = set(state.pending)


def _print_list(state: _KitState, items: List[pytest.Item]) -> None:
    """``--conformance-list``: every clause with the tests that would check it, in table order."""
    tests: dict = {}
    for item in items:
        if item.nodeid in state.clause_of:
            tests.setdefault(state.clause_of[item.nodeid], []).append(item.nodeid)
    modes = " and ".join(sorted(state.modes))
    lines = [f"clauses and tests for {modes} mode ({sum(map(len, tests.values()))} tests):"]
    for cid, clause in CLAUSES.items():
        if cid in tests:
            lines.append(f"{cid:<7} {clause.level.value:<6} {clause.title}")
            lines += [f"        {nodeid}" for nodeid in tests[cid]]
        else:
            why = NOT_ON_THE_WIRE.get(cid) or "not tested in this mode"
            lines.append(f"{cid:<7} {clause.level.value:<6} {clause.title}  ({why.split(';')[0]})")
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> Optional[bool]:
    """Run the pre-flight check before the first test; stop the run at once if it fails."""
    state = _state(session.config)
    if not state.active or state.kit is None or session.config.option.collectonly or not session.items:
        return None
    from .preflight import PreflightStop, preflight_master, preflight_node

    try:
        if "master" in state.modes:
            state.master_run = preflight_master(state.kit)
        if "cn" in state.modes:
            state.node_run = preflight_node(state.kit)
            if any(state.clause_of.get(item.nodeid) == "CN-10" for item in session.items):
                # The CN-10 nodes' live time runs out while the other checks run.
                try:
                    state.kit.live_time_watch()
                except KitError as exc:
                    # The CN-10 checks start them again, and report the error there.
                    logger.warning("the CN-10 nodes did not start before the tests: %s", exc)
    except PreflightStop as stop:
        if stop.clause is None:
            raise pytest.UsageError(stop.line) from None
        state.stopped = stop.line
        state.results.stopped = "the pre-flight check failed: " + stop.line
        failure = stop.failure
        state.results.record(stop.clause, "pre-flight", FAILED, failure.evidence if failure else stop.line,
                             failure.transcripts if failure else ())
        sys.stderr.write(stop.line + "\n")
        sys.stderr.flush()
        return True  # no test runs
    return None


# -- fixtures -----------------------------------------------------------------------
@pytest.fixture
def kit(request: pytest.FixtureRequest) -> Iterator[Kit]:
    """The kit's peers for one test; everything the test opens is closed after it."""
    state = _state(request.config)
    if state.kit is None:
        raise KitError("the kit fixture is for the conformance kit's own tests")
    try:
        yield state.kit
    finally:
        state.kit.cleanup()


@pytest.fixture(scope="session")
def master_run(request: pytest.FixtureRequest) -> Any:
    """One whole scenario, played once per run as a well-behaved compute node (master mode)."""
    from .scenario_checks import run_master_scenario
    from .session import command_frame
    from skyllh_cluster.commands import RegisterCN

    state = _state(request.config)
    assert state.kit is not None
    if state.master_run is not None:
        return state.master_run  # the pre-flight played it
    conn = state.kit.connect("scenario")
    try:
        return run_master_scenario(conn, command_frame(RegisterCN(int(time.time()), 3600)))
    finally:
        conn.close()


@pytest.fixture(scope="session")
def node_run(request: pytest.FixtureRequest) -> Any:
    """One compute node under test, played through the whole scenario once per run."""
    from .scenario_checks import run_node_scenario

    state = _state(request.config)
    assert state.kit is not None
    if state.node_run is not None:
        return state.node_run  # the pre-flight played it
    return run_node_scenario(state.kit)


# -- outcomes ------------------------------------------------------------------------
def _leaves(exc: BaseException) -> List[BaseException]:
    group = getattr(exc, "exceptions", None)
    if isinstance(group, (list, tuple)) and group:
        found: List[BaseException] = []
        for inner in group:
            found.extend(_leaves(inner))
        return found
    return [exc]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    state = _state(item.config)
    if not state.active:
        return
    if not is_kit_item(item):
        if report.failed:
            state.other_failures += 1
        return
    clause = _item_clause(item)
    nodeid = item.nodeid
    if report.when == "call" and report.passed:
        doc = first_line(getattr(getattr(item, "function", None), "__doc__", None))
        state.results.record(clause, nodeid, PASSED, doc or "as expected")
    elif report.skipped and report.when in ("setup", "call"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        state.results.record(clause, nodeid, SKIPPED, str(reason).replace("Skipped: ", ""))
    elif report.failed and call.excinfo is not None:
        undecided = _record_failure(state, clause, nodeid, call.excinfo.value, report.when)
        if undecided is not None:
            # Neither a pass nor a failure: pytest shows it as a skip with the reason.
            report.outcome = "skipped"
            report.longrepr = (str(item.path), (item.location[1] or 0) + 1, f"inconclusive: {undecided}")


def _record_failure(state: _KitState, clause: str, nodeid: str, exc: BaseException, when: str) -> Optional[str]:
    """Record what a raised exception says; return the reason if the test was only inconclusive."""
    leaves = _leaves(exc)
    broken = [leaf for leaf in leaves if not isinstance(leaf, (AssertionError, Inconclusive))]
    if broken:
        text = f"{type(broken[0]).__name__}: {first_line(str(broken[0]))} ({nodeid}, {when})"
        state.results.kit_errors.append(text)
        state.results.record(clause, nodeid, ERROR, text)
        return None
    failures = [leaf for leaf in leaves if isinstance(leaf, AssertionError)]
    if not failures:
        reasons = [leaf for leaf in leaves if isinstance(leaf, Inconclusive)]
        for leaf in reasons:
            state.results.record(leaf.clause or clause, nodeid, INCONCLUSIVE, leaf.reason, leaf.transcripts)
        return reasons[0].reason
    flaky = " (the failure did not reproduce every time)" if "Flaky" in type(exc).__name__ else ""
    own_failed = False
    for leaf in failures:
        evidence = leaf.evidence if isinstance(leaf, ClauseFailure) else first_line(str(leaf)) or type(leaf).__name__
        transcripts = leaf.transcripts if isinstance(leaf, ClauseFailure) else ()
        other = leaf.clause if isinstance(leaf, ClauseFailure) else None
        if other is None or other == clause:
            if not own_failed:
                state.results.record(clause, nodeid, FAILED, evidence + flaky, transcripts)
                own_failed = True
        else:
            state.results.record(other, nodeid, FAILED, f"{evidence}{flaky} (seen by {nodeid.rsplit('::', 1)[-1]})", transcripts)
            state.results.record(clause, nodeid, BLOCKED, f"blocked because {other} failed: {evidence}")
    return None


# -- progress --------------------------------------------------------------------------
def _progress_on(config: pytest.Config) -> bool:
    return config.get_verbosity() >= 0


def pytest_report_teststatus(report: Any, config: pytest.Config) -> Optional[tuple]:
    """No dots for the kit's tests: the kit prints one line per clause instead (none with -q)."""
    state = _state(config)
    if not state.active or report.nodeid not in state.clause_of or config.get_verbosity() > 0:
        return None
    if report.when == "call" or (report.when == "setup" and not report.passed):
        word = "inconclusive" if report.skipped and "inconclusive" in str(report.longrepr) else report.outcome
        return report.outcome, "", word
    return None


def pytest_runtest_logfinish(nodeid: str, location: Any) -> None:
    """Print a clause's line as soon as its last test has finished (h2spec style)."""
    config = _CONFIG.get("config")
    if config is None:
        return
    state = _state(config)
    clause = state.clause_of.get(nodeid)
    if clause is None or not _progress_on(config):
        return
    state.pending[clause] -= 1
    if state.pending[clause] > 0:
        return
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    row = next(r for r in state.results.rows(state.modes) if r.id == clause)
    colour = {PASSED: {"green": True}, FAILED: {"red": True}, INCONCLUSIVE: {"yellow": True}}.get(row.outcome, {})
    reporter.ensure_newline()
    reporter.write_line(clause_line(row, ascii_only=not _utf8(reporter)), **colour)
    if row.outcome in (FAILED, INCONCLUSIVE):
        reporter.write_line(f"{'':>14}-> {row.detail[:300]}")
        reporter.write_line(f"{'':>14}   read the clause: {_where([row])[row.id]}")
        for line in _transcript_lines(row):
            reporter.write_line(f"{'':>14}   {line}")
    # Each line as it is decided, also into a pipe (python -m ... | tee, and the two-role
    # run that passes on its children's lines): pytest's writer flushes only when it is told to.
    reporter.flush()


#: At most this many transcript lines under a failed clause's progress line (the reports keep them all).
_TRANSCRIPT_LINES = 24


def _transcript_lines(row: Any) -> List[str]:
    """The bytes that show a clause's first failure (or undecided check), cut to a screenful."""
    record = next((r for r in row.records if r.outcome == row.outcome and r.transcripts), None)
    if record is None:
        return []
    lines = [line for transcript in record.transcripts for line in transcript.render().splitlines()]
    if len(lines) > _TRANSCRIPT_LINES:
        left = len(lines) - _TRANSCRIPT_LINES
        lines = lines[:_TRANSCRIPT_LINES] + [f"({left} more transcript lines in --conformance-report / --conformance-html)"]
    return lines


#: The running config, for hooks that pytest calls without one.
_CONFIG: dict = {}


# -- the verdict ---------------------------------------------------------------------
def _exit_status(session: pytest.Session, state: _KitState, exitstatus: int) -> int:
    """The kit's exit status for this run (see :data:`.report.EXIT_STATUSES`)."""
    assert state.options is not None
    if int(exitstatus) == int(pytest.ExitCode.USAGE_ERROR):
        return EXIT_USAGE
    if int(exitstatus) == int(pytest.ExitCode.INTERRUPTED) or state.interrupted:
        return EXIT_INTERRUPTED
    if state.results.kit_errors or (session.testsfailed and int(exitstatus) == KIT_BROKEN):
        return KIT_BROKEN
    # No test selected in this mode (e.g. --conformance-clause names only the other
    # role's clauses): every clause is reported as not tested, which is no failure.
    verdict = state.results.exit_status(state.modes, state.options.strict)
    if state.other_failures:
        verdict = max(verdict, int(pytest.ExitCode.TESTS_FAILED))
    return verdict


def _report(session: pytest.Session, state: _KitState, status: int) -> dict:
    assert state.options is not None
    from skyllh_cluster import __version__

    return report_dict(
        kit=f"skyllh-cluster {__version__}",
        target=state.options.target_text,
        modes=state.modes,
        strict=state.options.strict,
        started=state.started_wall,
        duration=time.monotonic() - state.started,
        interrupted=status == EXIT_INTERRUPTED,
        exit_status=status,
        rows=state.results.rows(state.modes),
    )


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    state = _state(session.config)
    if not state.active or state.options is None:
        return
    if state.listing:
        session.exitstatus = 0
        return
    if state.kit is not None:
        state.kit.close()  # kills every node process still running, by pid
    status = _exit_status(session, state, int(exitstatus))
    state.status = status
    state.results.interrupted = status == EXIT_INTERRUPTED
    if status == EXIT_USAGE:
        session.exitstatus = status
        return
    report = _report(session, state, status)
    path = session.config.getoption("conformance_report")
    if path:
        Path(path).write_text(report_json(report) + "\n", encoding="utf-8")
    html = session.config.getoption("conformance_html")
    if html:
        from .html_report import write_html_report

        write_html_report(html, report)
    session.exitstatus = status


def pytest_keyboard_interrupt(excinfo: Any) -> None:
    """Nothing to do here: the partial table is printed by the terminal summary, marked interrupted."""


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    state = _state(config)
    if not state.active or state.options is None or state.listing:
        return
    if int(exitstatus) == int(pytest.ExitCode.USAGE_ERROR) or state.status == EXIT_USAGE:
        return
    no_table = bool(config.getoption("conformance_no_table"))
    rows = state.results.rows(state.modes)
    if state.stopped is None and not no_table:
        interrupted = int(exitstatus) == int(pytest.ExitCode.INTERRUPTED)
        if not state.kit_console:  # the kit's console has a blank line there already
            terminalreporter.section("SkyLLH cluster conformance")
        terminalreporter.write_line(
            render_table(state.options.target_text, rows, state.options.strict, interrupted=interrupted,
                         ascii_only=not _utf8(terminalreporter), where=_where(rows))
        )
        terminalreporter.write_line(f"kit run time: {time.monotonic() - state.started:.1f} s")
    for error in state.results.kit_errors:
        terminalreporter.write_line(f"KIT ERROR (not a verdict on the target): {error}", red=True)
    if state.status is not None and not no_table:
        colour = {0: "green", 1: "red"}.get(state.status, "yellow")
        terminalreporter.write_line(verdict_line(state.status, rows, state.options.strict), **{colour: True, "bold": True})


def _utf8(terminalreporter: Any) -> bool:
    """Whether the output takes the h2spec marks (✓ ×); ASCII marks otherwise."""
    name = str(getattr(sys.stdout, "encoding", "") or "").lower().replace("-", "").replace("_", "")
    return name == "utf8"


def _where(rows: List[Any]) -> dict:
    """Where to read each failed or inconclusive clause."""
    from .explain import clause_location

    return {r.id: clause_location(r.id) for r in rows if r.outcome in (FAILED, INCONCLUSIVE)}
