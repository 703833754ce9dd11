"""``python -m carecore``: the ``carecore`` command (:mod:`carecore.cli`)."""
import sys

from .cli import main

sys.exit(main())
