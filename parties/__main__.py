"""``python -m parties``: run a party process (same options as ``mpcvit party``)."""

from __future__ import annotations

import argparse
import logging
import sys

from parties.party import add_arguments, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m parties", description="run a party process (rank 0 = model owner, rank 1 = compute peer)")
    add_arguments(parser)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
