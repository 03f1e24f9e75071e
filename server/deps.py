"""Typed FastAPI dependencies: settings, the coordinator, bearer-token auth."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, Request

from server.coordinator import Coordinator
from server.errors import Unauthorized
from server.settings import Settings, get_settings

SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_coordinator(request: Request) -> Coordinator:
    return request.app.state.coordinator


CoordinatorDep = Annotated[Coordinator, Depends(get_coordinator)]


def require_token(settings: SettingsDep, authorization: Annotated[str | None, Header()] = None) -> None:
    """When ``api_token`` is set, ask for ``Authorization: Bearer <token>`` (constant-time compare)."""
    if settings.api_token is None:
        return
    scheme, _, token = (authorization or "").partition(" ")
    expected = settings.api_token.get_secret_value()
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise Unauthorized("missing or wrong bearer token (send 'Authorization: Bearer <token>')")


AuthDep = Annotated[None, Depends(require_token)]
