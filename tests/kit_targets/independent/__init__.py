"""An implementation of both roles written from ``spec/`` alone (issue 9 §6).

Nothing here imports the reference implementation, ``pickle``, ``pickletools``
or skyllh: the decoder, the canonical encoder and both programs were written
from ``spec/protocol.md``, ``spec/encoding-profile.md``,
``spec/state-machines.md``, the vectors and the SCN-3 output line, so that the
conformance kit and the reference cannot share a blind spot unseen.

* :mod:`.decoder`: a table-driven strict decoder of the encoding profile;
* :mod:`.encoder`: the canonical (ENC-7) encoder of the four commands;
* :mod:`.notation`: the lossless JSON value notation of the vectors (SCN-3);
* :mod:`.framing`: FRM-1 frames over a byte stream;
* ``master.py`` and ``compute_node.py``: the two programs, each with
  ``--fault NAME`` for the kit's fault-injection self-tests.
"""
