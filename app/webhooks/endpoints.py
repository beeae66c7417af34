"""Webhook deliveries (admin scope): what was sent to the receiver, and what is still to send."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.deps import AdminKey, PageDep, SessionDep
from app.errors import error_responses
from app.webhooks.schemas import WebhookDeliveryView
from core.db.models import WebhookStatus
from core.services import webhooks as service

router = APIRouter(prefix="/admin/webhook-deliveries", tags=["admin"])


@router.get(
    "",
    response_model=list[WebhookDeliveryView],
    responses=error_responses(401, 403, 422),
    summary="List webhook deliveries",
)
def list_deliveries(
    session: SessionDep,
    key: AdminKey,
    page: PageDep,
    status: Annotated[WebhookStatus | None, Query(description="only those in this status")] = None,
) -> list[WebhookDeliveryView]:
    """Newest first: pending (with when the next attempt is due), delivered, or failed (given up)."""
    rows = service.list_deliveries(session, status, page.limit, page.offset)
    return [WebhookDeliveryView.model_validate(row) for row in rows]
