"""``python -m lljax``: the same as the ``lljax`` command."""

import sys

from lljax.cli import main

if __name__ == "__main__":
    sys.exit(main())
