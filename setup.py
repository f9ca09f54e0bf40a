"""Only the optional C accelerator; everything else is in pyproject.toml.

skyllh_cluster.master._sendmany makes a broadcast's send(2) calls with the
GIL released once per chunk.  ``optional=True``: where it does not build
(no C compiler, no <sys/socket.h>), the package installs without it and the
master makes the same calls from Python.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "skyllh_cluster.master._sendmany",
            sources=["reference/skyllh_cluster/master/_sendmany.c"],
            optional=True,
        )
    ]
)
