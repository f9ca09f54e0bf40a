"""Make sure the kit's plugin is loaded when the kit's tests are collected.

Normally the ``pytest11`` entry point of the installed package has loaded
:mod:`skyllh_cluster.conformance.plugin` already, and this file does nothing.
It registers the plugin itself when the entry point did not run (a clone on
``PYTHONPATH`` without installing, or ``PYTEST_DISABLE_PLUGIN_AUTOLOAD``), and
refuses clearly when the plugin was switched off with ``-p no:...``.  It never
registers the plugin a second time.
"""

from __future__ import annotations

import pytest

from skyllh_cluster.conformance import plugin as _plugin

_ENTRY_POINT_NAME = "skyllh_cluster_conformance"


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
