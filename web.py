"""The pattern in a browser: `uv run web.py`, then open http://127.0.0.1:8000 (see webapp/)."""

import sys

from webapp.server import main

if __name__ == "__main__":
    sys.exit(main())
