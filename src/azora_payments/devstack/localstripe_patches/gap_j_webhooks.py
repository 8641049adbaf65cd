"""Gap j: webhooks delivered per object in creation order, signed at delivery time, retried.

Shown by ``tests/devstack/test_emulator.py``: ``test_j_webhooks_signed_ordered_and_retried``,
``test_j_signature_verifies_with_the_sdk``, ``test_j_configure_webhook_repoints``.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import hmac
import json
import time
from collections import deque
from typing import Any

import aiohttp
from localstripe import resources as R
from localstripe import webhooks as W

from azora_payments.devstack.localstripe_patches._base import (
    SETTINGS,
    log,
)


class WebhookDispatcher:
    """Delivers events per object in creation order, signed at delivery time, with retries."""

    retry_backoffs: tuple[float, ...] = (0.5, 1.0, 2.0)

    def __init__(self) -> None:
        self._pending: dict[str, deque[tuple[float, Any]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None

    def schedule(self, event: Any) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            log.warning("event %s created outside the server loop: not delivered", event.type)
            return
        key = str(event.data["object"].get("id") or event.id)
        item = (loop.time() + SETTINGS.webhook_delay, event)
        queue = self._pending.get(key)
        if queue is not None:
            queue.append(item)
            return
        self._pending[key] = deque([item])
        task = loop.create_task(self._drain(key), context=contextvars.Context())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain(self, key: str) -> None:
        queue = self._pending[key]
        loop = asyncio.get_running_loop()
        while queue:
            due, event = queue[0]
            if (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)
            await self._deliver(event)
            queue.popleft()
        del self._pending[key]

    async def _deliver(self, event: Any) -> None:
        payload = json.dumps(event._export(), indent=2, sort_keys=True).encode()
        for hook in list(W._webhooks.values()):
            if hook.events is None or event.type in hook.events:
                await self._post(hook, event.type, payload)

    async def _post(self, hook: Any, event_type: str, payload: bytes) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        for backoff in (*self.retry_backoffs, None):
            timestamp = int(time.time())
            signature = hmac.new(
                hook.secret.encode(), b"%d.%s" % (timestamp, payload), hashlib.sha256
            ).hexdigest()
            headers = {
                "Content-Type": "application/json; charset=utf-8",
                "Stripe-Signature": f"t={timestamp},v1={signature}",
            }
            try:
                async with self._session.post(hook.url, data=payload, headers=headers) as r:
                    if 200 <= r.status < 300:
                        return
                    outcome = f"HTTP {r.status}"
            except (aiohttp.ClientError, TimeoutError) as e:
                outcome = repr(e)
            if backoff is None:
                log.warning("webhook %s to %s abandoned: %s", event_type, hook.url, outcome)
                return
            await asyncio.sleep(backoff)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None


DISPATCHER = WebhookDispatcher()


def _schedule_webhook(event: Any) -> None:
    DISPATCHER.schedule(event)


async def shutdown() -> None:
    await DISPATCHER.close()


def install() -> None:
    R.schedule_webhook = _schedule_webhook
    W.schedule_webhook = _schedule_webhook
