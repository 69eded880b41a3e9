"""``python -m sifa_hub ARGS`` runs ``sifa-hub ARGS`` (also under ``torchrun -m sifa_hub``)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
