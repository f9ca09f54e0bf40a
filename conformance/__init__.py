"""The SkyLLH cluster conformance kit: a pytest plugin that tests any implementation on the wire.

Run it with ``python -m skyllh_cluster.conformance --target HOST:PORT`` (a
master running the conformance scenario) and/or ``--cn-command CMD`` (a
compute node to start), or ``pytest --pyargs skyllh_cluster.conformance``.

Modules, one job each:

* :mod:`.plugin` — options, the ``clause`` marker, fixtures, outcomes, exit status;
* :mod:`.report` — the clause table, the JSON report; :mod:`.untested` — clauses
  nothing on the wire can show;
* :mod:`.session` — the ``kit`` object tests use; :mod:`.peer` — recorded
  connections that decode only with the grammar; :mod:`.transcript` — byte
  transcripts; :mod:`.failures` — how a check fails;
* :mod:`.payloads` — other valid encodings, invalid frames, canary pickles;
  :mod:`.canary` — the listener that proves code ran; :mod:`.launcher` —
  compute node processes; :mod:`.scenario_checks` — the scenario, played and judged;
* :mod:`.strategies` — Hypothesis strategies;
* ``test_master_*`` and ``test_cn_*`` — the kit's tests, one clause each;
* :mod:`.drivers` — starting the reference and the original implementations.
"""
