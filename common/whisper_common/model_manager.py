"""Model lifetime: load once (even when requests race), count users, unload after an idle TTL, never while in use.

    manager = ModelManager(loader=load_whisper, ttl_seconds=300, metrics=metrics, unloader=None)
    await manager.preload(["tiny.en"])            # kept loaded (pinned); readiness waits for them
    async with manager.use("tiny.en") as model:   # loads on first use, in a thread, under a per-model lock
        ...                                        # the model cannot be unloaded inside this block

`loader(model_id)` runs in a worker thread and raises domain errors (ModelNotFound, ModelLoadError); a failed load is
not cached, so the next request tries again. `ttl_seconds`: -1 never unloads, 0 unloads as soon as the last user leaves.
The manager works on canonical ids: resolve aliases before calling it.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from whisper_common.metrics import ServiceMetrics

M = TypeVar("M")
logger = logging.getLogger("whisper_common.model_manager")


@dataclass
class _Entry(Generic[M]):
    model_id: str
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    model: M | None = None
    users: int = 0
    pinned: bool = False
    last_used: float = 0.0
    timer: asyncio.TimerHandle | None = None


class ModelManager(Generic[M]):
    """Loads models by id on demand and unloads the idle ones. Use from the event loop only."""

    def __init__(
        self,
        loader: Callable[[str], M],
        *,
        ttl_seconds: int,
        metrics: ServiceMetrics | None = None,
        unloader: Callable[[M], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.loader = loader
        self.unloader = unloader
        self.ttl_seconds = ttl_seconds
        self.metrics = metrics
        self.clock = clock
        self._entries: dict[str, _Entry[M]] = {}
        self.load_count = 0

    def loaded(self) -> list[str]:
        return [model_id for model_id, entry in self._entries.items() if entry.model is not None]

    def is_loaded(self, model_id: str) -> bool:
        entry = self._entries.get(model_id)
        return entry is not None and entry.model is not None

    def users(self, model_id: str) -> int:
        entry = self._entries.get(model_id)
        return entry.users if entry else 0

    async def preload(self, model_ids: Iterable[str]) -> None:
        """Load each model now and keep it loaded (no TTL)."""
        for model_id in model_ids:
            entry = self._entry(model_id)
            entry.pinned = True
            await self._ensure_loaded(entry)

    @asynccontextmanager
    async def use(self, model_id: str) -> AsyncIterator[M]:
        entry = self._entry(model_id)
        entry.users += 1
        self._cancel_timer(entry)
        try:
            model = await self._ensure_loaded(entry)
            yield model
        finally:
            entry.users -= 1
            entry.last_used = self.clock()
            if entry.users == 0:
                if entry.model is None and not entry.pinned and not entry.lock.locked():
                    self._entries.pop(model_id, None)  # a failed load leaves nothing behind
                else:
                    self._schedule_unload(entry)

    def _entry(self, model_id: str) -> _Entry[M]:
        entry = self._entries.get(model_id)
        if entry is None:
            entry = self._entries[model_id] = _Entry(model_id)
        return entry

    async def _ensure_loaded(self, entry: _Entry[M]) -> M:
        if entry.model is not None:
            return entry.model
        async with entry.lock:
            if entry.model is None:
                started = time.perf_counter()
                logger.info("loading model", extra={"model": entry.model_id})
                entry.model = await asyncio.to_thread(self.loader, entry.model_id)
                self.load_count += 1
                elapsed = time.perf_counter() - started
                logger.info("model loaded", extra={"model": entry.model_id, "seconds": round(elapsed, 2)})
                if self.metrics:
                    self.metrics.model_load_seconds.labels(model=entry.model_id).observe(elapsed)
                self._publish()
            return entry.model

    def _cancel_timer(self, entry: _Entry[M]) -> None:
        if entry.timer is not None:
            entry.timer.cancel()
            entry.timer = None

    def _schedule_unload(self, entry: _Entry[M], delay: float | None = None) -> None:
        if entry.pinned or self.ttl_seconds < 0 or entry.model is None:
            return
        self._cancel_timer(entry)
        delay = self.ttl_seconds if delay is None else delay
        entry.timer = asyncio.get_running_loop().call_later(delay, self._expire, entry.model_id)

    def _expire(self, model_id: str) -> None:
        entry = self._entries.get(model_id)
        if entry is None:
            return
        entry.timer = None
        idle_for = self.clock() - entry.last_used
        if entry.users > 0 or entry.pinned or entry.model is None:
            return
        if idle_for < self.ttl_seconds - 0.01:
            self._schedule_unload(entry, delay=self.ttl_seconds - idle_for)
            return
        self.unload(model_id)

    def unload(self, model_id: str) -> bool:
        """Unload now unless in use; True when it was unloaded."""
        entry = self._entries.get(model_id)
        if entry is None or entry.model is None or entry.users > 0:
            return False
        model, entry.model = entry.model, None
        self._cancel_timer(entry)
        if self.unloader is not None:
            self.unloader(model)
        del model
        gc.collect()  # frees the native model now, not at some later collection
        logger.info("model unloaded", extra={"model": model_id})
        if self.metrics:
            self.metrics.model_loaded.labels(model=model_id).set(0)
        self._publish()
        return True

    def unload_all(self) -> None:
        for model_id in list(self._entries):
            entry = self._entries[model_id]
            entry.users = 0
            self.unload(model_id)

    def _publish(self) -> None:
        if not self.metrics:
            return
        for model_id, entry in self._entries.items():
            if entry.model is not None:
                self.metrics.model_loaded.labels(model=model_id).set(1)
        self.metrics.models_loaded.set(len(self.loaded()))


def hub_cache_bytes() -> int:
    """Bytes in the Hugging Face hub cache (downloads in progress included): it grows while a model downloads,
    which /health/ready reports as progress during a first start. 0 when there is no cache yet."""
    root = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                                                  "huggingface"),
        "hub",
    )
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                continue
    return total
