"""Regenerate docs/serve.png, the README's screenshot of ``hazefree serve``.

The picture is taken by the browser test itself (tests/test_web_browser.py), which drives the page
in headless chromium: a sample photo dehazed, the split dragged, a text file named .jpg refused.
Running that test with HAZEFREE_SCREENSHOT set makes it copy its screenshot there, so the README
shows exactly what the test checked.

Usage (needs `apt-get install -y chromium` and `pip install -e ".[test]"`):
    python tools/serve_screenshot.py [--out docs/serve.png]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "serve.png", help="PNG to write")
    args = parser.parse_args()
    out = args.out.resolve()
    out.unlink(missing_ok=True)
    env = {**os.environ, "HAZEFREE_SCREENSHOT": str(out)}
    test = "tests/test_web_browser.py"
    status = subprocess.call([sys.executable, "-m", "pytest", "-q", "-rs", test], cwd=REPO, env=env)
    if status != 0 or not out.is_file():
        print(f"error: {test} failed or was skipped; {out} not written", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
