"""Dependencies as `Annotated` aliases: the services, the caller, the request's audit actor.

All are `async def`, even those that never await: FastAPI runs a plain `def` dependency in a
worker thread, a thread hand-off per request for what is an attribute lookup.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from azora_payments import request_timing
from azora_payments.auth import InvalidToken, User
from azora_payments.domain.audit import Actor
from azora_payments.errors import Forbidden, Unauthenticated
from azora_payments.services import Services


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_current_user(request: Request, services: ServicesDep) -> User:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("A bearer token is required.")
    try:
        user = await services.verifier.verify(token.strip())
    except InvalidToken:
        raise Unauthenticated("The token is not valid.") from None
    timing = request_timing.current()
    if timing is not None:
        timing.operator = user.is_operator
    await services.limiter.check(services.settings.rate_limit_user, "user", user.id)
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


async def get_operator(user: CurrentUser) -> User:
    if not user.is_operator:
        raise Forbidden("This needs the operator role.")
    return user


Operator = Annotated[User, Depends(get_operator)]


async def get_backend(user: CurrentUser) -> User:
    if not (user.is_service or user.is_operator):
        raise Forbidden("This needs the service or the operator role.")
    return user


# The product's backend (a `service` token) or an operator.
Backend = Annotated[User, Depends(get_backend)]


async def get_actor(request: Request, user: CurrentUser) -> Actor:
    return Actor(
        user.id,
        request_id=request.state.request_id,
        client_ip=request.state.client_ip,
    )


RequestActor = Annotated[Actor, Depends(get_actor)]
