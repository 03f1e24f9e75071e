"""``GET /v1/parties/keys`` (the parties' public keys) and ``GET /v1/health`` (parties and dealer reachable)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from server.deps import AuthDep, CoordinatorDep
from server.routes.classify import ERRORS
from server.schemas import HealthResponse, PairHealth, PartyHealth, PartyKey, PartyKeysResponse

router = APIRouter(prefix="/v1", tags=["parties"])


@router.get("/parties/keys", response_model=PartyKeysResponse, responses=ERRORS, summary="each party's X25519 sealing key, certificate and signature")
async def party_keys(coordinator: CoordinatorDep, _auth: AuthDep) -> PartyKeysResponse:
    """Clients seal share i to ``parties[i].public_key``; 503 if a party cannot be asked.

    Each key comes with the party's certificate and its signature over the key,
    as the party sent them: a client checks them against the deployment's CA
    (``mpcvit classify --ca``) so that it need not trust this coordinator.
    """
    keys = await coordinator.keys()
    return PartyKeysResponse(parties=[
        PartyKey(rank=i, public_key=k, certificate=coordinator.key_proofs[i][0].decode("ascii", "replace"), signature=coordinator.key_proofs[i][1])
        for i, k in enumerate(keys)
    ])


@router.get("/health", response_model=HealthResponse, responses={503: {"model": HealthResponse}}, summary="party pairs and dealers reachable")
async def health(coordinator: CoordinatorDep) -> JSONResponse:
    """200 when at least one party pair is ok: both parties answer Health, reach their peer and the dealer; 503 otherwise."""
    parties = [PartyHealth(**p) for p in await coordinator.health()]
    pairs = []
    for pair in coordinator.pool.pairs:
        mine = [p for p in parties if p.pair == pair.index]
        ok = all(p.reachable and p.peer_reachable and p.dealer_reachable and p.key_matches is not False for p in mine)
        pairs.append(PairHealth(index=pair.index, ok=ok, in_rotation=pair.in_rotation, in_flight=pair.in_flight,
                                sessions=coordinator.pool.slots(pair), loaded=sorted(pair.loaded), why_out=pair.why_out or None))
    dealer = all(p.dealer_reachable for p in parties if p.reachable)
    ok = any(p.ok for p in pairs)
    body = HealthResponse(ok=ok, parties=parties, pairs=pairs, dealer_reachable=dealer, queue_length=coordinator.queue_length)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)
