"""``mpcvit dealer``: run the dealer (correlated randomness) process; see ``parties.dealer``."""

from __future__ import annotations

import argparse

HELP = "run the dealer (correlated randomness) process"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from parties.dealer import add_arguments as dealer_arguments

    dealer_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from parties.dealer import run as run_dealer

    return run_dealer(args)
