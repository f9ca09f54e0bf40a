"""``python -m skyllh_cluster``: the ``skyllh-cluster`` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
