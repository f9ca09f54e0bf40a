"""Red-team targets for the conformance kit: realistic faults and correct oddities.

``target.py --variant NAME`` runs the independent implementation
(``tests/kit_targets/independent/``) with one variant applied: either a bug
an implementer could plausibly write, breaking exactly one requirement, or a
correct but unusual behaviour the kit must accept.  The table of variants,
with the clauses each one breaks, is :data:`target.VARIANTS`.
"""
