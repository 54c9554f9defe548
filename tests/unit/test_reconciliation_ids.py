"""Case ids drawn in bulk (reconcile.random_uuids) are what uuid.uuid4() would give: version 4, the
RFC 4122 variant, text in the canonical form, all different."""

from __future__ import annotations

import uuid

from services.reconciliation.service.reconcile import random_uuids


def test_ids_drawn_at_once_are_canonical_random_uuids() -> None:
    ids = random_uuids(5000)
    assert len(set(ids)) == 5000
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
    assert random_uuids(0) == []
