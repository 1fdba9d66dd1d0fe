"""``python -m shadowdeco`` and the ``shadowdeco`` console script: the command line.

Sub-commands: ``report`` reads the JSONL logs and answers the three questions of a shadow test
(``shadowdeco report --help``; ``docs/report.md``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

from . import __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="shadowdeco",
        description="shadowdeco: run a candidate in shadow mode beside the live code path. "
        "'shadowdeco report FILE...' answers the three questions from the JSONL logs.",
    )
    parser.add_argument("--version", action="version", version=f"shadowdeco {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    from .report import cli  # noqa: PLC0415 - the report's modules load only for this command

    cli.configure(
        commands.add_parser(
            "report",
            help="summarise shadow results from JSONL logs (text, --json, --html)",
            description=cli.DESCRIPTION,
            epilog=cli.EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    args = parser.parse_args(argv)
    if args.command == "report":
        try:
            return cli.run(args)
        except BrokenPipeError:  # `shadowdeco report ... | head`: stop quietly, as cat does
            with contextlib.suppress(OSError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
            return 1
        except KeyboardInterrupt:
            return 130
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
