"""Test-only implementations for the conformance kit's self-tests.

``faulty_master`` and ``faulty_cn`` are a master (conformance scenario) and a
compute node built on raw sockets and :mod:`skyllh_cluster.codec`.  With no
``--fault`` they conform; with ``--fault CLAUSE-ID`` they break exactly that
clause, so that the self-tests can show that the kit's test for the clause
fails.  ``--write-mode`` makes them write everything in one write or one
byte per write: correct but unusual, and the kit must pass them.
"""
