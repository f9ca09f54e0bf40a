"""The kit run the way users run it: from a built wheel in its own virtualenv, and from a clone.

The wheel is built with ``pip wheel --no-deps .`` and installed, with its
dependencies from the package index (or pip's cache), into a fresh
virtualenv.  From there the reference master is started exactly as the
README starts it, and the kit, with every default, must pass it and the
reference compute node in strict mode.

The same clone's ``conformance/`` directory must give the same verdicts:

* ``pytest conformance --target ...`` with the package installed normally
  (not editable) -- the kit's tests are then found in the clone while the
  package is imported from site-packages;
* ``pytest conformance --target ...`` with nothing installed, the reference
  on ``PYTHONPATH``;
* ``pytest --pyargs skyllh_cluster.conformance`` and
  ``python -m skyllh_cluster.conformance`` from the wheel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest

from skyllh_cluster.conformance.drivers.process import MasterProcess, address_pattern

from wheel_builds import one_build_at_a_time

pytestmark = pytest.mark.timeout(900)

REPO = Path(__file__).resolve().parent.parent
#: The kit's runtime dependencies, for the environment with nothing installed.
DEPENDENCIES = ["construct>=2.10.68,<2.11", "hypothesis>=6.80", "pytest>=7.4"]


def _run(argv: List[str], *, cwd: Path, env: Optional[Dict[str, str]] = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _make_venv(path: Path) -> Path:
    venv.EnvBuilder(with_pip=True, clear=True).create(path)
    return path / "bin" / "python"


def _clean_env(**extra: str) -> Dict[str, str]:
    """The environment without this test run's Python paths, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def wheel_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheel built from this clone installed (as ``pip install`` installs it)."""
    root = tmp_path_factory.mktemp("wheel")
    dist = root / "dist"
    with one_build_at_a_time():
        built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(dist), str(REPO)], cwd=root)
    assert built.returncode == 0, built.stderr[-3000:]
    wheels = list(dist.glob("skyllh_cluster-*.whl"))
    assert len(wheels) == 1, wheels
    python = _make_venv(root / "venv")
    installed = _run([str(python), "-m", "pip", "install", "--quiet", str(wheels[0])], cwd=root, env=_clean_env())
    assert installed.returncode == 0, installed.stderr[-3000:]
    return python


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the kit's dependencies only: the package itself is not installed."""
    root = tmp_path_factory.mktemp("bare")
    python = _make_venv(root / "venv")
    installed = _run([str(python), "-m", "pip", "install", "--quiet", *DEPENDENCIES], cwd=root, env=_clean_env())
    assert installed.returncode == 0, installed.stderr[-3000:]
    return python


@pytest.fixture(scope="module")
def readme_master(wheel_python: Path) -> Iterator[str]:
    """The reference master from the wheel, started as the README starts it; yields ``HOST:PORT``."""
    script = wheel_python.parent / "skyllh-cluster"
    argv = [str(script), "master", "--scenario", "conformance", "--host", "127.0.0.1", "--port", "0"]
    with MasterProcess(argv, address_pattern("listening on")) as master:
        yield master.target


def _kit(argv: List[str], report: Path, *, cwd: Path, env: Optional[Dict[str, str]] = None) -> Dict:
    proc = _run([*argv, "--conformance-report", str(report)], cwd=cwd, env=env or _clean_env())
    data = json.loads(report.read_text()) if report.exists() else {}
    data["_status"] = proc.returncode
    data["_output"] = proc.stdout[-4000:] + proc.stderr[-2000:]
    return data


def _verdicts(report: Dict) -> Dict[str, str]:
    return {c["id"]: c["outcome"] for c in report.get("clauses", [])}


def test_wheel_kit_passes_the_reference_with_every_default(wheel_python: Path, readme_master: str, tmp_path: Path) -> None:
    node = f"{wheel_python} -m skyllh_cluster.compute_node {{host}} {{port}} --live-time {{live_time}}"
    report = _kit([str(wheel_python), "-m", "skyllh_cluster.conformance", "--target", readme_master,
                   "--cn-command", node, "--strict-conformance"], tmp_path / "r.json", cwd=tmp_path)
    assert report["_status"] == 0, report["_output"]
    outcomes = _verdicts(report)
    assert set(outcomes.values()) == {"passed", "skipped"}
    where = _run([str(wheel_python), "-c", "import skyllh_cluster.conformance as k; print(k.__file__)"], cwd=tmp_path)
    assert "site-packages" in where.stdout


@pytest.fixture(scope="module")
def master_verdicts(wheel_python: Path, readme_master: str, tmp_path_factory: pytest.TempPathFactory) -> Dict[str, str]:
    """The master-mode verdicts of ``python -m skyllh_cluster.conformance`` from the wheel, for comparison."""
    tmp = tmp_path_factory.mktemp("pym")
    report = _kit([str(wheel_python), "-m", "skyllh_cluster.conformance", "--target", readme_master,
                   "--strict-conformance"], tmp / "r.json", cwd=tmp)
    assert report["_status"] == 0, report["_output"]
    return _verdicts(report)


def test_pytest_conformance_from_the_clone_with_a_normal_install(
    wheel_python: Path, readme_master: str, master_verdicts: Dict[str, str], tmp_path: Path
) -> None:
    report = _kit([str(wheel_python), "-m", "pytest", "conformance", "--target", readme_master, "--strict-conformance",
                   "-p", "no:cacheprovider", "-q"], tmp_path / "r.json", cwd=REPO)
    assert report["_status"] == 0, report["_output"]
    assert _verdicts(report) == master_verdicts


def _fresh_clone(dest: Path) -> Path:
    """The clone's files as a fresh clone has them: tracked and new files, no build or install artifacts."""
    listed = _run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO)
    assert listed.returncode == 0, listed.stderr
    for name in filter(None, listed.stdout.split("\0")):
        source = REPO / name
        if source.is_file():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return dest


def test_pytest_conformance_from_the_clone_with_nothing_installed(
    bare_python: Path, readme_master: str, master_verdicts: Dict[str, str], tmp_path: Path
) -> None:
    clone = _fresh_clone(tmp_path / "clone")
    env = _clean_env(PYTHONPATH=str(clone / "reference"))
    report = _kit([str(bare_python), "-m", "pytest", "conformance", "--target", readme_master, "--strict-conformance",
                   "-p", "no:cacheprovider", "-q"], tmp_path / "r.json", cwd=clone, env=env)
    assert report["_status"] == 0, report["_output"]
    assert _verdicts(report) == master_verdicts


def test_pytest_pyargs_from_the_wheel(
    wheel_python: Path, readme_master: str, master_verdicts: Dict[str, str], tmp_path: Path
) -> None:
    report = _kit([str(wheel_python), "-m", "pytest", "--pyargs", "skyllh_cluster.conformance", "--target",
                   readme_master, "--strict-conformance", "-p", "no:cacheprovider", "-q"], tmp_path / "r.json", cwd=tmp_path)
    assert report["_status"] == 0, report["_output"]
    assert _verdicts(report) == master_verdicts
