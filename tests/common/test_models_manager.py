"""ModelManager: one load under races, reference counts, TTL unload only when idle, pinned preloads."""
from __future__ import annotations

import asyncio
import threading
import time

import pytest

from whisper_common.errors import ModelNotFound
from whisper_common.metrics import ServiceMetrics
from whisper_common.model_manager import ModelManager


class Loader:
    def __init__(self, delay: float = 0.05) -> None:
        self.calls: list[str] = []
        self.delay = delay
        self.lock = threading.Lock()

    def __call__(self, model_id: str) -> dict[str, str]:
        if model_id == "missing":
            raise ModelNotFound(model_id)
        time.sleep(self.delay)
        with self.lock:
            self.calls.append(model_id)
        return {"id": model_id}


async def test_racing_requests_load_once() -> None:
    loader = Loader(delay=0.2)
    manager = ModelManager(loader, ttl_seconds=-1)

    async def use() -> str:
        async with manager.use("a") as model:
            await asyncio.sleep(0.01)
            return model["id"]

    assert await asyncio.gather(*(use() for _ in range(10))) == ["a"] * 10
    assert loader.calls == ["a"]


async def test_ttl_unloads_when_idle_and_never_in_use() -> None:
    metrics = ServiceMetrics("t")
    manager = ModelManager(Loader(), ttl_seconds=0.2, metrics=metrics)  # type: ignore[arg-type]
    async with manager.use("a"):
        await asyncio.sleep(0.5)  # longer than the TTL, but in use
        assert manager.is_loaded("a") and manager.users("a") == 1
        assert manager.unload("a") is False
    assert manager.is_loaded("a")
    await asyncio.sleep(0.4)
    assert not manager.is_loaded("a")
    assert metrics.models_loaded._value.get() == 0


async def test_reuse_resets_the_idle_timer() -> None:
    manager = ModelManager(Loader(), ttl_seconds=0.3)  # type: ignore[arg-type]
    for _ in range(4):
        async with manager.use("a"):
            pass
        await asyncio.sleep(0.15)
        assert manager.is_loaded("a")
    await asyncio.sleep(0.4)
    assert not manager.is_loaded("a")


async def test_preloaded_models_stay() -> None:
    loader = Loader()
    manager = ModelManager(loader, ttl_seconds=0)
    await manager.preload(["a"])
    async with manager.use("a"):
        pass
    await asyncio.sleep(0.1)
    assert manager.loaded() == ["a"] and loader.calls == ["a"]


async def test_failed_load_is_not_cached() -> None:
    manager = ModelManager(Loader(), ttl_seconds=-1)
    for _ in range(2):
        with pytest.raises(ModelNotFound):
            async with manager.use("missing"):
                pass
    assert manager.users("missing") == 0 and manager.loaded() == [] and "missing" not in manager._entries
