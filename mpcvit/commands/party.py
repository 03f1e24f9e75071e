"""``mpcvit party``: run a party process (rank 0 = model owner, rank 1 = compute peer); see ``parties.party``."""

from __future__ import annotations

import argparse

HELP = "run a party process (rank 0 = model owner, rank 1 = compute peer)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from parties.party import add_arguments as party_arguments

    party_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from parties.party import run as run_party

    return run_party(args)
