"""``python -m hazefree``: the same as the ``hazefree`` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
