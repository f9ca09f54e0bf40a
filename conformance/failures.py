"""How a check says that the target broke a clause.

A kit test fails by raising :class:`ClauseFailure` (an ``AssertionError``, so
pytest shows it as an ordinary failed assertion).  It carries one line of
evidence in the form "expected X, got Y", the clause it is about when that is
not the test's own clause, and the transcripts of the connections involved.
:class:`NoReply` is the same for a timeout, so that the report can tell "no
reply within 2 s" from a wrong reply.

:class:`Inconclusive` is neither: the check saw no positive evidence either
way (the target did not demonstrably handle what was sent), and the clause
is reported *inconclusive*.

Any other exception raised by a kit test is a bug in the kit, and the plugin
ends the run with a status other than 0 or 1.
"""

from __future__ import annotations

from typing import Iterable, Optional, Sequence

from .transcript import Transcript

__all__ = ["ClauseFailure", "NoReply", "NeverConnected", "Inconclusive", "KitError"]


class ClauseFailure(AssertionError):
    """The target did something a clause forbids (or did not do what it requires).

    Args:
        evidence: One line, "expected X, got Y" where possible.
        clause: The clause broken, when it is not the clause of the test that
            found it (for example a framing error seen while checking the
            scenario's payloads).  ``None`` means the test's own clause.
        transcripts: The connections whose bytes show the failure.
    """

    def __init__(
        self,
        evidence: str,
        *,
        clause: Optional[str] = None,
        transcripts: Iterable[Transcript] = (),
    ) -> None:
        self.evidence = " ".join(evidence.split())  # one line, whatever the caller built
        self.clause = clause
        self.transcripts: Sequence[Transcript] = tuple(transcripts)
        super().__init__(self.evidence)

    def __str__(self) -> str:
        head = self.evidence if self.clause is None else f"[{self.clause}] {self.evidence}"
        return "\n".join([head] + [t.render() for t in self.transcripts])

    def about(self, clause: str) -> "ClauseFailure":
        """Return the same failure blamed on ``clause`` unless it already names one."""
        if self.clause is not None:
            return self
        return type(self)(self.evidence, clause=clause, transcripts=self.transcripts)

    def with_transcripts(self, *transcripts: Transcript) -> "ClauseFailure":
        """Return the same failure with more transcripts attached."""
        known = list(self.transcripts)
        known += [t for t in transcripts if all(t is not k for k in known)]
        clone = type(self)(self.evidence, clause=self.clause, transcripts=known)
        return clone


class NoReply(ClauseFailure):
    """The target did not do something within the conformance timeout."""


class NeverConnected(ClauseFailure):
    """A compute node started by the kit exited, or stayed silent, without connecting (CN-1).

    In a test it is a failure of CN-1; in the pre-flight it means the
    ``--cn-command`` does not start a node at all, a configuration error.
    """


class Inconclusive(Exception):
    """The kit could not decide the clause: it has no positive evidence either way.

    Raised by a check that waited for evidence (a canary, a close, a printed
    line) and saw none it could trust, for example because the target did not
    read what was sent.  It is neither a pass nor a failure of the target:
    the clause's outcome is *inconclusive*, with this one-line reason.

    Args:
        reason: One line saying what evidence was missing, and, where it
            helps, which option would give the kit more room.
        clause: The clause left undecided, when it is not the test's own.
        transcripts: The connections whose bytes show what the kit saw.
    """

    def __init__(self, reason: str, *, clause: Optional[str] = None, transcripts: Iterable[Transcript] = ()) -> None:
        self.reason = " ".join(reason.split())
        self.clause = clause
        self.transcripts: Sequence[Transcript] = tuple(transcripts)
        super().__init__(self.reason)

    def __str__(self) -> str:
        head = self.reason if self.clause is None else f"[{self.clause}] {self.reason}"
        return "\n".join([head] + [t.render() for t in self.transcripts])


class KitError(RuntimeError):
    """The kit could not do its job (for example, it could not bind a port)."""
