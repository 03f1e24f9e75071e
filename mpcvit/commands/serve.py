"""``mpcvit serve``: run the REST coordinator (FastAPI under uvicorn).

Every option mirrors a field of ``server.settings.Settings``; an option left
out keeps the value from the environment (``MPCVIT_<FIELD>``) or ``.env``.
"""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any

HELP = "run the REST coordinator"
log = logging.getLogger(__name__)

# option -> (settings field, type, help)
_OPTIONS: dict[str, tuple[str, Any, str]] = {
    "--party0": ("party0", str, "host:port of party 0's control service"),
    "--party1": ("party1", str, "host:port of party 1's control service"),
    "--certs": ("cert_dir", str, "certificate directory from 'mpcvit certs' (mutual TLS to the parties)"),
    "--models": ("model_dir", str, "checkpoint directory of the models the parties serve"),
    "--batch-size": ("batch_size", int, "most requests per secure forward"),
    "--batch-wait-ms": ("batch_wait_ms", float, "how long a batch waits for more requests"),
    "--queue-bound": ("queue_bound", int, "most waiting requests; more get 503 + Retry-After"),
    "--max-sessions": ("max_sessions", int, "secure forwards in flight at once per pair (default: what its parties report)"),
    "--request-timeout": ("request_timeout_s", float, "default deadline of a request, seconds"),
    "--load-timeout": ("load_timeout_s", float, "deadline of LoadModel, seconds"),
    "--connect-timeout": ("connect_timeout_s", float, "how long a call waits for a party to connect, seconds"),
    "--health-interval": ("health_interval_s", float, "seconds between the watch's Health calls that re-admit a restarted party (0: off)"),
    "--max-body-bytes": ("max_body_bytes", int, "largest request body"),
    "--body-timeout": ("body_timeout_s", float, "seconds a request's body may take to arrive; later: 408, connection closed (default 30)"),
    "--max-connections": ("max_connections", int, "most connections and requests at once; more get 503 (default 512)"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    for flag, (field, typ, help_text) in _OPTIONS.items():
        parser.add_argument(flag, dest=field, type=typ, default=None, help=f"{help_text} (env MPCVIT_{field.upper()})")
    parser.add_argument("--pair", dest="pairs", action="append", default=None, metavar="P0_HOST:PORT,P1_HOST:PORT",
                        help="a party pair of the pool (repeatable; replaces --party0/--party1; "
                        "env MPCVIT_PAIRS as a JSON list)")
    parser.add_argument("--preload", dest="preload_models", action="append", default=None, metavar="MODEL",
                        help="load this model on the parties at start (repeatable; env MPCVIT_PRELOAD_MODELS as a JSON list)")
    parser.add_argument("--insecure", action="store_true", default=None, help="plaintext gRPC to the parties (loopback tests only)")
    parser.add_argument("--serve-unlisted", action="store_true", default=None,
                        help="let requests name any checkpoint under --models, not only the catalog (the manifests' curated "
                        "models and --preload); env MPCVIT_SERVE_UNLISTED")
    parser.add_argument("--token-env", default=None, metavar="VAR",
                        help="read the bearer token from this environment variable (default: MPCVIT_API_TOKEN)")


def settings_from_args(args: argparse.Namespace) -> Any:
    """Settings from the environment, with every given option on top."""
    import os

    from server.settings import Settings

    overrides = {field: getattr(args, field) for field, _, _ in _OPTIONS.values() if getattr(args, field, None) is not None}
    if args.preload_models:
        overrides["preload_models"] = args.preload_models
    if args.pairs:
        overrides["pairs"] = args.pairs
    if args.insecure:
        overrides["insecure"] = True
    if getattr(args, "serve_unlisted", None):
        overrides["serve_unlisted"] = True
    if args.token_env:
        token = os.environ.get(args.token_env)
        if not token:
            raise ValueError(f"--token-env {args.token_env}: that environment variable is empty")
        overrides["api_token"] = token
    from pydantic import ValidationError

    try:
        return Settings(**overrides)
    except ValidationError as exc:  # say it as a one-line CLI error
        reasons = "; ".join(f"{'.'.join(map(str, e['loc'])) + ': ' if e['loc'] else ''}{e['msg'].removeprefix('Value error, ')}" for e in exc.errors())
        raise ValueError(f"invalid settings: {reasons}") from exc


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from server.main import create_app, uvicorn_options

    settings = settings_from_args(args)
    shown = settings.model_dump(exclude={"api_token"})
    log.info("coordinator settings: %s", json.dumps(shown, default=str))
    log.info("auth: %s", "bearer token" if settings.api_token else "none")
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="info", **uvicorn_options(settings))
    return 0
