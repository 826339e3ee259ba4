"""What the weights-reading tools here share: an unusable weights file is a one-line error, exit 2."""

from __future__ import annotations

import sys
from collections.abc import Callable

from hazefree.models.weights import CheckpointError


def run_tool(main: Callable[[], int]) -> int:
    """``main()``'s exit code; a :class:`CheckpointError` (its message names the file) becomes
    ``error: ...`` on stderr and exit code 2 instead of a traceback."""
    try:
        return main()
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
