"""Command line: parse, call the API, print, exit with the code of DESIGN 3.1.

Each subcommand lives in ``xaiready.commands.<name>`` with ``add_arguments(parser)`` and
``run(args) -> int``; those modules import frameworks only inside ``run``, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from . import __version__
from .errors import XaiReadyError, first_line

COMMANDS = {
    "check": ("xaiready.commands.check", "measure whether a model is ready for gradient and CAM explanations"),
    "explain": ("xaiready.commands.explain", "explain a prediction with gradient, CAM or black-box methods; PNG overlay"),
    "verify-conversion": ("xaiready.commands.verify_conversion",
                          "compare two models (e.g. an original and its conversion) on outputs, gradients "
                          "and an attribution map"),
    "evaluate": ("xaiready.commands.evaluate", "score explanation methods with quantitative metrics (table, JSON, curves)"),
    "benchmark": ("xaiready.commands.benchmark", "leaderboard of methods on the built-in ground-truth benchmark"),
    "demo": ("xaiready.commands.demo", "build example models (healthy and broken), check each, print a table"),
    "serve": ("xaiready.commands.serve", "the platform: model registry, job queue and REST API over HTTP"),
    "token": ("xaiready.commands.token", "create bearer tokens for the platform's teams"),
    "run": ("xaiready.commands.run", "explain and score a whole dataset into a resumable run directory "
                                     "(local processes or Ray)"),
    "report": ("xaiready.commands.report", "write the HTML report of a run directory (one file, opens offline)"),
}
EXIT_CODES = """exit codes:
  0  success (check: the verdict meets --require)      4  refused by policy (needs --trust, unsafe path)
  1  --require not met                                  5  over a resource limit
  2  usage error                                        6  the model could not run on the input
  3  invalid model or input file (corrupt, unsupported, arch mismatch, missing code)
 70  internal error: a bug in xaiready or a framework (please report it)"""
INTERNAL_ERROR = 70  # EX_SOFTWARE in sysexits.h: distinct from 1 (--require not met) for CI scripts


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, like every other error
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="xaiready", description="Make any vision model XAI-ready, or say exactly why not.",
                     epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"xaiready {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        cmd = sub.add_parser(name, help=help_text, description=help_text, epilog=EXIT_CODES,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors: return the code, don't exit
        return int(exc.code or 0)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except XaiReadyError as exc:
        print(exc.one_line(), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug in xaiready or a framework: still one line, unless debugging
        if os.environ.get("XAIREADY_DEBUG"):
            raise
        print(f"error: internal error {type(exc).__name__}: {first_line(exc)} "
              "(please report it, with the output of XAIREADY_DEBUG=1 for a traceback)", file=sys.stderr)
        return INTERNAL_ERROR


if __name__ == "__main__":
    sys.exit(main())
