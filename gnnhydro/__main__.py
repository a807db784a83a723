"""``python -m gnnhydro`` — the same as the ``gnnhydro`` console script."""

import sys

from gnnhydro.cli import main

if __name__ == "__main__":
    sys.exit(main())
