"""Redrive: requests still PROCESSING past an age are published again from the ingest schema, for
when SQS lost their messages after they went out (a purged queue, a local server restarted empty).

Safe to repeat: the ledger posts a transfer id at most once and answers an id it knows with its
original outcome event, so a redrive either posts the lost transfer or tells ingest the outcome again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from services.ingest.domain.model import message_group_for
from services.ingest.service.ports import RequestStore

log = logging.getLogger(__name__)


@dataclass
class RedriveService:
    store: RequestStore
    after_seconds: int
    batch: int
    message_groups: int

    @property
    def interval_seconds(self) -> float:
        """How often to look: four times per age, so a stuck request waits at most 1.25 ages."""
        return max(1.0, self.after_seconds / 4)

    async def redrive_stuck(self) -> int:
        """Queues at most one batch of stuck requests for publishing again; returns how many."""
        count = await self.store.redrive_stuck(
            after_seconds=self.after_seconds, limit=self.batch, group_of=self._group_of
        )
        if count:
            log.warning(
                "re-published requests still PROCESSING past the redrive age",
                extra={"fields": {"count": count, "after_seconds": self.after_seconds}},
            )
        return count

    def _group_of(self, account_id: str) -> str:
        return message_group_for(account_id, self.message_groups)
