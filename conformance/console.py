"""The kit's console: its progress lines, its table and its verdict line, and none of pytest's own.

A person running the kit reads clauses, not test files.  So in a kit run
(``--target``, ``--cn-command`` or ``--conformance-list`` given) at the
default verbosity or with ``-q``, pytest's terminal reporter is swapped for
:class:`KitReporter`, which leaves out pytest's session header, the
"collected N items" line, the file names, dots and percentages, the
tracebacks of failed tests, the short summary, the warnings summary and the
"N passed in S s" line.  What is left is what the plugin writes: one line per
clause as it is decided (with the evidence and transcript of a failure), the
clause table and the verdict line.

pytest's output comes back when it is asked for: ``-v`` (or more) keeps
pytest's own reporter whole; ``--tb=STYLE`` shows the failed tests'
tracebacks; ``-r CHARS`` the short summary.  Errors of the kit's own tests
(a fixture that broke) are always shown: they are the kit's bugs, and their
traceback is what it takes to fix them.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest
from pytest import TerminalReporter

__all__ = ["KitReporter", "install_kit_reporter", "wants_kit_console"]

#: pytest's default ``-r`` characters: any other value was asked for.
_DEFAULT_REPORT_CHARS = ("fE", "fEw", "wfE")


def wants_kit_console(config: pytest.Config) -> bool:
    """Whether this run is a kit run at the default verbosity or quieter."""
    kit_run = bool(
        config.getoption("target", None)
        or config.getoption("cn_command", None)
        or config.getoption("conformance_list", None)
    )
    return (
        kit_run
        and config.get_verbosity() <= 0
        and not config.getoption("collectonly", False)
        and not config.getoption("help", False)
    )


def install_kit_reporter(config: pytest.Config) -> None:
    """Replace pytest's terminal reporter by :class:`KitReporter` (before the session starts)."""
    standard = config.pluginmanager.get_plugin("terminalreporter")
    if standard is None or isinstance(standard, KitReporter) or type(standard) is not TerminalReporter:
        return  # no terminal (-p no:terminal) or another plugin's reporter: leave it alone
    config.pluginmanager.unregister(standard)
    config.pluginmanager.register(KitReporter(config, sys.stdout), "terminalreporter")


class KitReporter(TerminalReporter):
    """pytest's terminal reporter with pytest's own lines left out (see the module's docstring)."""

    @property
    def showheader(self) -> bool:
        return False

    @property
    def showfspath(self) -> bool:
        return False

    @showfspath.setter
    def showfspath(self, value: Any) -> None:  # pytest sets it from --co; the kit never shows paths
        pass

    @property
    def showlongtestinfo(self) -> bool:
        return False

    def _determine_show_progress_info(self) -> Any:
        return False

    def pytest_collection(self) -> None:
        """No "collecting ..." line."""

    def report_collect(self, final: bool = False) -> None:
        """No "collected N items" line."""

    def summary_failures(self) -> None:
        if self.config.option.tbstyle != "auto":
            super().summary_failures()

    def summary_warnings(self) -> None:
        """The kit's warnings are not the user's business."""

    def short_test_summary(self) -> None:
        if self.config.option.reportchars not in _DEFAULT_REPORT_CHARS:
            super().short_test_summary()

    def summary_stats(self) -> None:
        """No "N passed in S s": the plugin prints the kit's verdict line instead."""

    def _report_keyboardinterrupt(self) -> None:
        """No KeyboardInterrupt banner: the table says the run was interrupted."""
