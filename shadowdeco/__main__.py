"""``python -m shadowdeco``: the command line (the report arrives with its own issue)."""

from __future__ import annotations

import argparse
import sys

from . import __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shadowdeco", description=__doc__)
    parser.add_argument("--version", action="version", version=f"shadowdeco {__version__}")
    parser.parse_args(argv)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
