"""Coordinator settings, read from the environment (prefix ``MPCVIT_``) or a ``.env`` file.

Read them through the ``get_settings()`` dependency, never a module-level
``Settings()``. The bearer token is a secret and has no default: when it is
unset, the API is open (a loopback demo); when set, every ``/v1`` route but
``/v1/health`` asks for ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything the coordinator can be told; ``mpcvit serve`` mirrors each field as an option."""

    model_config = SettingsConfigDict(env_prefix="MPCVIT_", env_file=".env", extra="ignore")

    party0: str = Field("127.0.0.1:50051", description="host:port of party 0's PartyControl service (model owner)")
    party1: str = Field("127.0.0.1:50052", description="host:port of party 1's PartyControl service (compute peer)")
    pairs: list[str] = Field(
        default_factory=list,
        description="a pool of party pairs, each 'PARTY0_HOST:PORT,PARTY1_HOST:PORT' (replicas share each party's sealing key); "
        "unset: the one pair party0, party1",
    )
    cert_dir: Path | None = Field(None, description="directory made by 'mpcvit certs' (CA + coordinator cert for mutual TLS)")
    insecure: bool = Field(False, description="talk to the parties without TLS (refused unless both party addresses are loopback)")
    model_dir: Path = Field(Path("checkpoints/digits"), description="checkpoint directories (arch.json + meta.json) the parties serve")
    preload_models: list[str] = Field(default_factory=list, description="models to load on the parties at start")
    serve_unlisted: bool = Field(
        False,
        description="let a request name any checkpoint under model_dir (the parties load it); unset, only the catalog is served: "
        "the manifests' curated models (every checkpoint when no folder has a manifest) and preload_models",
    )
    batch_size: int = Field(8, ge=1, le=64, description="most requests in one secure forward (a party takes at most 64)")
    batch_wait_ms: float = Field(5.0, ge=0, le=10_000, description="how long a batch waits for more requests")
    queue_bound: int = Field(64, ge=1, description="most requests waiting; more get 503 + Retry-After")
    max_sessions: int | None = Field(
        None, ge=1, le=64,
        description="sessions in flight at once per party pair, over all models; unset: what the pair's parties say they run "
        "at once (the smaller of their Health 'max_sessions', 1 until they answer)",
    )
    request_timeout_s: float = Field(60.0, gt=0, description="deadline of a request that brings none")
    load_timeout_s: float = Field(120.0, gt=0, description="deadline of LoadModel on the parties")
    connect_timeout_s: float = Field(2.0, gt=0, description="how long a call waits for a party's channel to connect")
    health_timeout_s: float = Field(5.0, gt=0, description="deadline of a Health call (a party probes its peer and the dealer, 2 s each)")
    health_interval_s: float = Field(
        5.0, ge=0, description="how often a watch asks the parties for Health and loads again what a restarted party lost (0: never)"
    )
    retry_after_s: int = Field(1, ge=0, description="Retry-After of a 503")
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="largest request body; more get 413")
    body_timeout_s: float = Field(
        30.0, gt=0, le=3600,
        description="how long a request's body may take to arrive, from the request's start; later: 408 and the connection closed",
    )
    max_connections: int | None = Field(
        512, ge=1,
        description="most connections and requests uvicorn handles at once; more get 503 at once (uvicorn's limit_concurrency; "
        "unset: no cap)",
    )
    max_image_pixels: int = Field(4096 * 4096, ge=1, description="largest decoded image (width x height)")
    api_token: SecretStr | None = Field(None, description="bearer token; unset = no auth")

    @model_validator(mode="after")
    def _tls_or_insecure(self) -> "Settings":
        if not self.insecure and self.cert_dir is None:
            raise ValueError("set cert_dir (MPCVIT_CERT_DIR, from 'mpcvit certs') or insecure=true explicitly")
        if self.pairs and {"party0", "party1"} & self.model_fields_set:
            raise ValueError("give either party0 and party1 (one pair) or pairs (a pool), not both")
        if self.insecure:
            from mpcvit.pki import require_loopback

            require_loopback("insecure (plaintext gRPC)", {
                (f"party{r}" if len(self.pair_addresses) == 1 else f"pair {i} party{r}"): address
                for i, pair in enumerate(self.pair_addresses) for r, address in enumerate(pair)
            })
        return self

    @field_validator("pairs")
    @classmethod
    def _pairs_are_two_addresses(cls, pairs: list[str]) -> list[str]:
        for pair in pairs:
            parts = [p.strip() for p in pair.split(",")]
            if len(parts) != 2 or not all(p.rpartition(":")[0] and p.rpartition(":")[2].isdigit() for p in parts):
                raise ValueError(f"a pair is 'PARTY0_HOST:PORT,PARTY1_HOST:PORT', got {pair!r}")
        return pairs

    @property
    def pair_addresses(self) -> list[tuple[str, str]]:
        """Every pair's (party 0, party 1) address: ``pairs``, else the one pair ``party0``, ``party1``."""
        if not self.pairs:
            return [(self.party0, self.party1)]
        return [tuple(p.strip() for p in pair.split(",")) for pair in self.pairs]  # type: ignore[misc]

    @property
    def party_addresses(self) -> tuple[str, str]:
        """The first pair's addresses."""
        return self.pair_addresses[0]


@lru_cache
def get_settings() -> Settings:
    """The process's settings (cached); tests override this dependency."""
    return Settings()
