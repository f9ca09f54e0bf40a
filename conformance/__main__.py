"""``python -m skyllh_cluster.conformance``: run the conformance kit.

The kit's own options are parsed here (``--help`` shows only them, the exit
statuses and two examples); everything else is handed to pytest, which runs
the kit's tests (``--help-pytest`` shows pytest's options).  An unknown
option close to one of the kit's gets "did you mean".
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path
from typing import List, Optional

__all__ = ["main", "build_parser"]

EXAMPLES = """\
examples:
  python -m skyllh_cluster.conformance --target 127.0.0.1:9999 --strict-conformance
  python -m skyllh_cluster.conformance --cn-command "./my-node {host} {port} --live-time {live_time}" \\
      --conformance-html report.html
"""


def _exit_text() -> str:
    from .report import EXIT_STATUSES

    lines = ["exit status:"]
    for code, meaning in EXIT_STATUSES:
        lines.append(f"  {code}  {meaning}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The kit's command line (the options the plugin adds to pytest, plus --list, --explain, --help-pytest)."""
    parser = argparse.ArgumentParser(
        prog="python -m skyllh_cluster.conformance",
        usage="%(prog)s [--target HOST:PORT] [--cn-command CMD] [options] [pytest options]",
        description="Check a SkyLLH cluster master (--target) and/or compute node (--cn-command) against spec/protocol.md.",
        epilog=_exit_text() + "\n\n" + EXAMPLES + "Any other option is passed to pytest (see --help-pytest).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    add = parser.add_argument
    add("--target", metavar="HOST:PORT", help="test the master there (it runs the conformance scenario)")
    add("--cn-command", metavar="CMD", help="test the compute node CMD starts; {host} {port} {live_time} are filled in")
    add("--strict-conformance", action="store_true", help="SHOULD failures fail the run too")
    add("--conformance-clause", metavar="ID[,ID]", action="append", help="run only the tests of these clauses")
    add("--conformance-report", metavar="PATH", help="write the results as JSON (schema 2)")
    add("--conformance-html", metavar="PATH", help="write the results as one self-contained HTML file")
    add("--conformance-timeout", metavar="S", help="longest wait for a reply (default: 2; stretched for a slow target)")
    add("--registration-budget", metavar="S", help="how long a master may keep a silent connection (MST-7, FRM-6; default: 5)")
    add("--cn-startup-timeout", metavar="S", help="how long a started compute node may take to connect (default: 10)")
    add("--cn-live-time", metavar="S", help="live time given to compute nodes (default: 60)")
    add("--listen", metavar="HOST:PORT", help="where the kit listens for compute nodes (default: 127.0.0.1:0)")
    add("--tls-ca", metavar="FILE", help="TLS target: the master's CA; with --cn-command: require node certs from it")
    add("--tls-cert", metavar="FILE", help="TLS: the kit's client cert (master: mutual TLS) / server cert (CN mode)")
    add("--tls-key", metavar="FILE", help="the key of --tls-cert (default: in --tls-cert)")
    add("--conformance-examples", metavar="N", help="Hypothesis examples per generated test (default: 10)")
    add("--hypothesis-seed", metavar="SEED", help="pick the generated inputs by seed (default: the same every run)")
    add("--list", action="store_true", help="print the clauses and tests that would run, without touching a target")
    add("--explain", metavar="ID", help="print the text of clause ID (e.g. MST-7) and where to read it")
    add("-q", "--quiet", action="store_true", help="no progress lines, only the table")
    add("--help-pytest", action="store_true", help="show pytest's own options")
    return parser


#: The plugin's options that are not offered here (used between the kit's own processes).
_PLUGIN_ONLY = {"--conformance-no-table", "--conformance-list"}


def _unknown_close_to_ours(parser: argparse.ArgumentParser, extra: List[str]) -> Optional[str]:
    """A "did you mean" error for an unknown option that looks like one of the kit's."""
    ours = [s for action in parser._actions for s in action.option_strings if s.startswith("--")]
    for word in extra:
        if not word.startswith("--"):
            continue
        name = word.split("=", 1)[0]
        if name in _PLUGIN_ONLY:
            continue
        close = difflib.get_close_matches(name, ours, n=1, cutoff=0.8)
        if close:
            return f"unrecognized option {name}; did you mean {close[0]}?"
    return None


def main(argv: Optional[List[str]] = None) -> int:
    """Run the kit with ``argv``; return the exit status (see ``--help``)."""
    import pytest

    from .report import EXIT_USAGE

    args_in = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, extra = parser.parse_known_args(args_in)
    problem = _unknown_close_to_ours(parser, extra)
    if problem:
        parser.print_usage(sys.stderr)
        print(f"{parser.prog}: error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    kit_dir = str(Path(__file__).resolve().parent)
    # No cache directory: the kit may live in a read-only site-packages.
    # Running as ``-m skyllh_cluster.conformance`` has imported the package
    # before pytest could set up assertion rewriting for its plugin; the kit
    # does not rely on rewritten asserts, so that warning is only noise.
    base = [kit_dir, "-p", "no:cacheprovider", "-W", "ignore::pytest.PytestAssertRewriteWarning", "--no-header"]
    if args.help_pytest:
        return int(pytest.main([*base, "--help"]))
    if args.explain:
        return _explain(args.explain)
    forwarded: List[str] = []
    for action in parser._actions:
        if not action.option_strings or action.dest in ("help", "help_pytest", "explain", "list", "quiet"):
            continue
        value = getattr(args, action.dest)
        flag = action.option_strings[-1]
        if value is None or value is False:
            continue
        if value is True:
            forwarded.append(flag)
        elif isinstance(value, list):
            forwarded += [f"{flag}={v}" for v in value]
        else:
            forwarded.append(f"{flag}={value}")
    if args.list:
        forwarded += ["--conformance-list", "-q"]
    if args.quiet and not args.list:
        forwarded.append("-q")
    if args.target and args.cn_command and not args.list and not _needs_one_session(extra):
        return _both_roles(args, forwarded, extra)
    return int(pytest.main([*base, *forwarded, *extra]))


#: pytest options that write one file per session: two sessions side by side would overwrite each other.
_ONE_SESSION = ("--junitxml", "--junit-xml", "--resultlog", "--collect-only", "--co", "--pdb")


def _needs_one_session(extra: List[str]) -> bool:
    return any(word.split("=", 1)[0] in _ONE_SESSION for word in extra)


def _both_roles(args: argparse.Namespace, forwarded: List[str], extra: List[str]) -> int:
    """Both roles side by side, in two kit sessions whose results are merged (see :mod:`.both_roles`)."""
    from .both_roles import run_both_roles

    own = ("--target", "--cn-command", "--conformance-report", "--conformance-html")
    common = [w for w in forwarded if w.split("=", 1)[0] not in own] + extra
    return run_both_roles(
        [f"--target={args.target}"],
        [f"--cn-command={args.cn_command}"],
        common,
        report_path=args.conformance_report,
        html_path=args.conformance_html,
        strict=bool(args.strict_conformance),
        target_text=f"{args.target} + {args.cn_command}",
        narrowed=bool(args.conformance_clause) or _narrows(extra),
    )


#: pytest options that select tests: a run narrowed with them is not split further.
_SELECTING = ("-k", "-m", "--deselect", "--lf", "--last-failed", "--ff", "--sw", "--stepwise")


def _narrows(extra: List[str]) -> bool:
    return any(word.split("=", 1)[0] in _SELECTING or (word[:2] in ("-k", "-m") and len(word) > 2) for word in extra)


def _explain(clause_id: str) -> int:
    from .explain import clause_location, clause_text
    from .report import CLAUSE_TABLE as CLAUSES
    from .report import EXIT_USAGE

    wanted = clause_id.strip().upper()
    if wanted not in CLAUSES:
        close = difflib.get_close_matches(wanted, list(CLAUSES), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        print(f"--explain: no clause {clause_id!r}{hint}", file=sys.stderr)
        return EXIT_USAGE
    print(clause_text(wanted))
    print(f"\nread it in: {clause_location(wanted)}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # output piped into head & co.
        sys.stderr.close()
        sys.exit(0)
