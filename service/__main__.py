"""`python -m service`: the same as `asymtp serve`, without loading other subcommands
(the `asymtp` dispatcher imports every subcommand's module, the executor's among them)."""

from __future__ import annotations

import argparse
import sys

from service.cli import add_arguments, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="asymtp serve", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
