"""Make sure the kit's plugin is loaded, and knows this directory, when the kit's tests are collected.

Normally the ``pytest11`` entry point of the installed package has loaded
:mod:`skyllh_cluster.conformance.plugin` already.  This file

* tells the plugin that the test modules beside it are the kit's
  (:func:`~skyllh_cluster.conformance.plugin.register_kit_dir`): a clone's
  ``conformance/`` is then recognised whatever is installed -- the package
  from this clone (editable or not) or nothing at all;
* when nothing is installed and only ``reference/`` is on ``PYTHONPATH``,
  maps the package name ``skyllh_cluster.conformance`` to this directory, as
  the installed package's layout does;
* registers the plugin itself when the entry point did not run (no install,
  or ``PYTEST_DISABLE_PLUGIN_AUTOLOAD``), and refuses clearly when the plugin
  was switched off with ``-p no:...``.  It never registers the plugin twice.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent
_PACKAGE = "skyllh_cluster.conformance"
_ENTRY_POINT_NAME = "skyllh_cluster_conformance"


def _import_kit_package() -> None:
    """Import ``skyllh_cluster.conformance``; from this directory if it is not installed."""
    try:
        importlib.import_module(_PACKAGE)
        return
    except ModuleNotFoundError as exc:
        if exc.name != _PACKAGE:
            raise
    import skyllh_cluster  # the reference implementation must be importable (installed or on PYTHONPATH)

    spec = importlib.util.spec_from_file_location(
        _PACKAGE, _HERE / "__init__.py", submodule_search_locations=[str(_HERE)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[_PACKAGE] = module
    spec.loader.exec_module(module)
    skyllh_cluster.conformance = module  # type: ignore[attr-defined]


_import_kit_package()

from skyllh_cluster.conformance import plugin as _plugin  # noqa: E402 - after the package is importable

_plugin.register_kit_dir(_HERE)


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    if pluginmanager.is_registered(_plugin):
        return
    if pluginmanager.is_blocked(_ENTRY_POINT_NAME) or pluginmanager.is_blocked(_plugin.__name__):
        return  # the user switched the kit off; pytest_configure below says so
    # pytest_addoption and pytest_configure are historic hooks: a plugin
    # registered now still gets both calls.
    pluginmanager.register(_plugin, _plugin.__name__)


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.is_registered(_plugin):
        raise pytest.UsageError(
            "the conformance kit's plugin is disabled (-p no:skyllh_cluster_conformance); "
            "remove that option to run the kit"
        )
