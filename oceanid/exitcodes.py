"""One exit-status convention for the operator's checks (issue 23), documented in
docs/commands.md: a timer, CI or a monitor tells "the site is wrong" from "the command was
used wrong" without reading the output.

- 0 ``OK``: every check passed; for drift, a converge would change nothing.
- 1 ``FAILED``: a check failed, or a host or an API could not be read (never "no drift").
- 2 ``DRIFT``: drift only: a converge would change something.
- 3 ``USAGE``: nothing was checked: the inventory, its settings or secrets were refused, an
  argument was wrong, or every check was skipped for want of something to run first.

``make check`` validates input and nothing else: its finding is 1. ``make verify`` is pytest's
own (0 passed, 1 failed, 2-5 pytest's usage and collection errors).
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

OK, FAILED, DRIFT, USAGE = 0, 1, 2, 3


class Parser(argparse.ArgumentParser):
    """argparse with a usage error that exits USAGE (argparse's own 2 is drift's)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(USAGE, f"{self.prog}: error: {message}\n")


def inventory_parser(prog: str, description: str) -> Parser:
    """The operator's commands' parser: `prog`, `description`, and the inventory file as the
    first argument (inventory.py unless named), as every make target passes it."""
    parser = Parser(prog=prog, description=description)
    parser.add_argument("inventory", nargs="?", default="inventory.py")
    return parser
