"""The tests on every installed Python from 3.9 up, each in its own environment.

``make test-pythons`` installs nox into .venv and runs this file; ``nox`` alone
does the same where nox is installed.  One session per supported Python that
runs as ``python3.X``, found on PATH or among pyenv's installed versions
(which need not be selected with ``pyenv global``); the others are named in
the log, not silently passed over::

    nox                      # every Python found
    nox -s "tests-3.12"      # one of them
    nox -- tests/test_codec.py -q   # arguments after -- replace pytest's default, ``tests``
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import List, Optional

import nox

SUPPORTED = ("3.9", "3.10", "3.11", "3.12", "3.13")


def _runs(executable: str) -> bool:
    """Whether ``executable`` starts (a pyenv shim of an unselected version does not)."""
    try:
        return subprocess.run([executable, "-c", "pass"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _pyenv_bin(version: str) -> Optional[Path]:
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    for prefix in sorted((root / "versions").glob(f"{version}.*"), reverse=True):
        if _runs(str(prefix / "bin" / f"python{version}")):
            return prefix / "bin"
    return None


def _find_pythons() -> List[str]:
    """The supported versions that run here; pyenv's are put first on PATH for nox to find."""
    found = []
    for version in SUPPORTED:
        if _runs(f"python{version}"):
            found.append(version)
            continue
        bin_dir = _pyenv_bin(version)
        if bin_dir is not None:
            os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
            found.append(version)
    return found


FOUND = _find_pythons()
MISSING = [version for version in SUPPORTED if version not in FOUND]

nox.options.sessions = ["tests"]
# Every listed interpreter was found on PATH: a missing one is an error, not a skip.
nox.options.error_on_missing_interpreters = True
nox.options.reuse_existing_virtualenvs = True


@nox.session(python=FOUND)
def tests(session: nox.Session) -> None:
    """The whole test suite, against an editable install, as ``make test`` runs it."""
    if MISSING:
        session.log(f"not installed here, so not tested: Python {', '.join(MISSING)}")
    # The same quiet editable install as the Makefile's (see EDITABLE_QUIET there).
    session.install("-e", ".[test]", env={"PYTHONWARNINGS": "ignore:Editable installation"})
    session.run("python", "-m", "pytest", *(session.posargs or ["-n", "4", "--dist", "loadfile", "tests"]))
