"""``python -m mlnll check``: every family's closed forms against autodiff on this backend."""

import sys

from mlnll._src.verify.command import main

if __name__ == "__main__":
    sys.exit(main())
