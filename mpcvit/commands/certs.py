"""``mpcvit certs --out DIR [--hosts ...]``: a CA and mutual-TLS certificates for every role."""

from __future__ import annotations

import argparse
import logging

HELP = "make a CA and per-role mutual-TLS certificates"

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="directory to write ca.pem, <role>.pem and <role>.key into")
    parser.add_argument("--hosts", nargs="*", default=[], help="extra DNS names or IPs for every certificate's SAN")


def run(args: argparse.Namespace) -> int:
    from parties.tls import ROLES, write_certs

    written = write_certs(args.out, hosts=args.hosts)
    logger.info("%d files for %s in %s (keys are mode 0600)", len(written), ", ".join(ROLES), args.out)
    return 0
