"""Redis fast path for idempotency keys. Best effort: PostgreSQL stays the truth, so every Redis
failure is logged and treated as a miss, never as an answer."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import datetime

import redis.asyncio as redis
from redis.exceptions import RedisError

from services.ingest.service.ports import CacheStatistics, KeyBinding

log = logging.getLogger(__name__)


class RedisIdempotencyCache:
    def __init__(self, client: redis.Redis, *, prefix: str, ttl_seconds: int) -> None:
        self._client = client
        self.prefix = prefix
        self.ttl_seconds = ttl_seconds

    async def get(self, key: str) -> KeyBinding | None:
        try:
            raw = await self._client.get(self.prefix + key)
        except RedisError as error:
            log.warning("idempotency cache unavailable", extra={"fields": {"error": str(error)}})
            return None
        if raw is None:
            return None
        data = json.loads(raw)
        return KeyBinding(data["fp"], data["mid"], datetime.fromisoformat(data["exp"]))

    async def put_many(self, bindings: Mapping[str, KeyBinding]) -> None:
        if not bindings:
            return
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for key, binding in bindings.items():
                    value = json.dumps(
                        {"fp": binding.fingerprint, "mid": binding.message_id, "exp": binding.expires_at.isoformat()}
                    )
                    pipe.set(self.prefix + key, value, ex=self.ttl_seconds)
                await pipe.execute()
        except RedisError as error:
            log.warning("idempotency cache write failed", extra={"fields": {"error": str(error)}})

    async def ping(self) -> None:
        await self._client.ping()

    async def statistics(self) -> CacheStatistics:
        try:
            total = 0
            async for _ in self._client.scan_iter(match=self.prefix + "*", count=1000):
                total += 1
            memory = await self._client.info("memory")
            return CacheStatistics(True, total, self.prefix, self.ttl_seconds, str(memory.get("used_memory_human", "")))
        except RedisError:
            return CacheStatistics(False, 0, self.prefix, self.ttl_seconds, "")
