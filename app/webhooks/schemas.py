"""Response bodies of webhook deliveries."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class WebhookDeliveryView(BaseModel):
    """One webhook message and what became of it (its body names the request and its status only)."""

    id: str
    event_type: str
    request_id: str
    status: str
    attempts: int
    created_at: datetime
    next_attempt_at: datetime
    delivered_at: datetime | None
    last_status_code: int | None
    last_error: str | None

    model_config = {"from_attributes": True}
