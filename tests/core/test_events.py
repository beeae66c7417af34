"""The promotion stamp and the publisher's channels (no Redis here: the stamp alone)."""

from __future__ import annotations

import json
from pathlib import Path

from core.events import EventPublisher, PromotionStamp, promotion_event


def test_each_promotion_leaves_a_new_whole_stamp(tmp_path: Path) -> None:
    stamp = PromotionStamp(tmp_path / "run" / "adapter-promoted.json")
    assert stamp.read() is None  # before the first promotion
    publisher = EventPublisher(None, stamp=stamp)
    assert publisher.publish(promotion_event("v2", 2, "v1", "promote"))
    first = stamp.read()
    assert first is not None and json.loads(first)["version_id"] == "v2"
    # a rollback to the same version later still changes the text: the alias counter moved
    assert publisher.publish(promotion_event("v2", 4, "v3", "rollback"))
    second = stamp.read()
    assert second is not None and second != first and json.loads(second)["counter"] == 4
    assert [p.name for p in stamp.path.parent.iterdir()] == ["adapter-promoted.json"]  # no partial left


def test_a_stamp_that_cannot_be_written_is_reported_not_raised(tmp_path: Path) -> None:
    blocker = tmp_path / "run"
    blocker.write_text("a file where the folder should be")
    publisher = EventPublisher(None, stamp=PromotionStamp(blocker / "adapter-promoted.json"))
    assert publisher.publish(promotion_event("v2", 2, "v1", "promote")) is False
    assert EventPublisher(None).publish(promotion_event("v2", 2, "v1", "promote")) is False  # no channel
