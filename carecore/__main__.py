"""``python -m carecore``: the ``carecore`` command (:mod:`carecore.cli`)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
