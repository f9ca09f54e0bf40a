"""The kit against the red-team compute nodes: faults it must fail, odd but correct ones it must pass.

The variants and how each is judged: ``tests/redteam_runs.py``.
"""

from __future__ import annotations

import pytest

from redteam_runs import check_verdict, variant_params

pytestmark = pytest.mark.timeout(900)


@pytest.mark.parametrize("name", variant_params("cn"))
def test_kit_verdict_on_red_team_cn(name: str) -> None:
    check_verdict(name)
