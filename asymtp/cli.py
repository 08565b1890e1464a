"""`asymtp` command line: each package registers its own subcommands.

Subcommand modules are imported lazily so `asymtp plan` never loads mlx.
Exit codes: 0 success, 1 a negative answer (infeasible plan, parity mismatch), 2 bad input.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

# subcommand -> (module, one-line help). The module defines `add_arguments(parser)` and
# `run(args) -> int`; "module:name" picks `add_name_arguments` and `run_name` instead.
COMMANDS: dict[str, tuple[str, str]] = {
    "plan": ("planner.cli", "plan a split for a topology and a model (dry run)"),
    "serve": ("service.cli", "run the planner HTTP service (POST /plan, deployments)"),
    "check-parity": ("asymtp.check_parity", "compare a sharded model with the unsharded one"),
    "make-test-model": ("executor.cli:make_model", "write a small random model to a directory"),
    "agent": ("executor.cli:agent", "run this node's agent: follow a deployment, serve its rank"),
    "topology": ("executor.cli:topology", "print a topology file built from what agents report"),
    "import-gguf": ("executor.gguf_import", "convert a GGUF file to an mlx-lm model directory"),
    "doctor": ("asymtp.doctor", "check what an RDMA mesh needs (RDMA, cables, OS), with fixes"),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # One line saying what to fix, exit code 2 (argparse's own default prints usage too).
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> tuple[
    argparse.ArgumentParser, dict[str, Callable[[argparse.Namespace], int]]
]:
    parser = _Parser(prog="asymtp", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    runners: dict[str, Callable[[argparse.Namespace], int]] = {}
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        # "module" or "module:prefix" (prefix_add_arguments / prefix_run ... here: add_X_arguments)
        module_path, _, variant = module_name.partition(":")
        module = importlib.import_module(module_path)
        if variant:
            getattr(module, f"add_{variant}_arguments")(p)
            runners[name] = getattr(module, f"run_{variant}")
        else:
            module.add_arguments(p)
            runners[name] = module.run
    return parser, runners


def main(argv: Sequence[str] | None = None) -> int:
    parser, runners = build_parser()
    args = parser.parse_args(argv)
    try:
        return runners[args.command](args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
