"""Adapter versions (admin scope): list, read, promote, roll back, import the first one; the activation
log."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Query, status
from sqlalchemy.orm import Session

from app.adapters.schemas import (
    ActivationList,
    ActivationPublic,
    AdapterVersionList,
    AdapterVersionPublic,
    ImportAdapterRequest,
    PromoteRequest,
)
from app.deps import AdminKey, RuntimeDep, SessionDep, actor, after_commit
from app.errors import error_responses
from app.runtime import Runtime, model_config
from core.db.models import AdapterVersion, VersionStatus
from core.events import promotion_event, promotion_publisher
from core.ml.data import DataError, load_prepared
from core.ml.model import load_base
from core.services import registry as service
from core.services.adapter_import import import_adapter
from core.services.errors import Conflict, InvalidInput

router = APIRouter(prefix="/admin", tags=["admin"])

VersionStatusFilter = Annotated[VersionStatus | None, Query(alias="status")]


def _public(session: Session, version: AdapterVersion, active_id: str | None) -> AdapterVersionPublic:
    public = AdapterVersionPublic.model_validate(version)
    public.lineage = service.lineage(session, version.id)
    public.active = version.id == active_id
    return public


@router.get(
    "/adapters",
    response_model=AdapterVersionList,
    responses=error_responses(401, 403, 422),
    summary="List adapter versions",
)
def list_adapters(
    session: SessionDep, key: AdminKey, status_: VersionStatusFilter = None
) -> AdapterVersionList:
    """Oldest first, with lineage, metrics and status."""
    active = service.active_adapter(session)
    active_id = active.version_id if active else None
    versions = [_public(session, v, active_id) for v in service.list_versions(session, status_)]
    return AdapterVersionList(active_version_id=active_id, versions=versions)


@router.get(
    "/adapters/{version_id}",
    response_model=AdapterVersionPublic,
    responses=error_responses(401, 403, 404),
    summary="Read a version",
)
def get_adapter(version_id: str, session: SessionDep, key: AdminKey) -> AdapterVersionPublic:
    active = service.active_adapter(session)
    return _public(session, service.get_version(session, version_id), active.version_id if active else None)


def _move_alias(
    session: Session, runtime: Runtime, version_id: str, kind: str, who: str, reason: str | None
) -> AdapterVersionPublic:
    current = service.active_adapter(session)
    if current is None:  # belongs in registry.promote_version (a service refusal), left here for now
        raise Conflict("no adapter version is active yet (bootstrap first)")
    active = service.promote_version(
        session, version_id, current.version_id, current.counter, who, kind=kind, reason=reason
    )
    event = promotion_event(active.version_id, active.counter, current.version_id, kind)

    def announce() -> None:
        promotion_publisher(runtime.settings).publish(event)  # other API processes
        runtime.watcher.wake()  # this one

    after_commit(session, announce)
    return _public(session, service.get_version(session, version_id), active.version_id)


def _alias_route(kind: Literal["promote", "rollback"], summary: str, description: str) -> None:
    """Register ``POST /adapters/{version_id}/<kind>``: a promotion and a rollback move the active alias
    alike and differ only in the kind the activation log records."""

    def endpoint(
        version_id: str,
        session: SessionDep,
        runtime: RuntimeDep,
        key: AdminKey,
        body: PromoteRequest | None = None,
    ) -> AdapterVersionPublic:
        return _move_alias(session, runtime, version_id, kind, actor(key), body.reason if body else None)

    endpoint.__name__ = f"{kind}_adapter"  # the route's name and OpenAPI operationId
    router.post(
        f"/adapters/{{version_id}}/{kind}",
        response_model=AdapterVersionPublic,
        responses=error_responses(401, 403, 404, 409, 422),
        summary=summary,
        description=description,
    )(endpoint)


_alias_route(
    "promote",
    "Promote",
    "Make a version active (compare-and-swap on the current one).  409 for a version that may carry\n"
    "data of a completed erasure, whose weights are destroyed, or that is already active.",
)
_alias_route(
    "rollback",
    "Roll back",
    "Return to an earlier version; refused (409) when it predates a completed erasure.",
)


@router.post(
    "/adapters/import",
    response_model=AdapterVersionPublic,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(401, 403, 409, 422),
    summary="Import the first version",
)
def import_first_adapter(
    body: ImportAdapterRequest, session: SessionDep, runtime: RuntimeDep, key: AdminKey
) -> AdapterVersionPublic:
    """Bring your own adapter: check a LoRA folder trained elsewhere (plain PEFT) against the served base
    model and prompt, evaluate it on the prepared data, and make it the first active version (the root of
    the lineage, ``config.kind`` "imported").  422 for an adapter that does not fit (the reason named), 409
    once any version exists."""
    settings = runtime.settings
    try:
        data = load_prepared(settings.data_dir)
    except DataError as error:
        raise InvalidInput(f"no prepared data to evaluate the adapter on: {error}") from None
    result = import_adapter(
        session,
        load_base(model_config(settings)),  # a copy of its own: the served one is never edited here
        Path(body.path),
        data,
        settings.adapters_dir,
        settings.base_model,
        body.base_sha256,
        body.split,
        actor(key),
    )
    after_commit(session, runtime.watcher.wake)
    return _public(session, service.get_version(session, result.version_id), result.version_id)


@router.get(
    "/activations",
    response_model=ActivationList,
    responses=error_responses(401, 403),
    summary="Activation log",
)
def list_activations(
    session: SessionDep, key: AdminKey, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> ActivationList:
    """Which version became active when (append-only), newest first."""
    events = service.activation_events(session, limit)
    return ActivationList(events=[ActivationPublic.model_validate(e) for e in events])
