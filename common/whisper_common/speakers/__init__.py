"""Voiceprints, for both services: the speaker encoder (resemblyzer's d-vectors in numpy), the voiceprint library
(`/v1/speakers`: enrolment, store, the references a request matches against) and the matching rule.

- `encoder` (with `mel`, `speaker_net`, `torch_checkpoint`): `SpeakerEncoder`, its `model_id`
- `clips`: enrolment clips decoded and checked (not audio, too short or long, no speech: a 400 naming the field)
- `store`: the speakers and their samples on the database layer (`SPEAKERS_SCHEMA`)
- `library`: `SpeakerLibrary` (enrol, read, delete, `references` for a request's `speakers=`), `Selection`
- `matching`: `Reference`, `assign` (one-to-one at a threshold), `mean_embedding`
- `routes`: `speakers_router()`; `settings`: `SpeakerLibrarySettings` (SPEAKERS__*); `errors`

A service serves the library for its lifespan:

    async with serve_speakers(app, settings, settings.speakers) as library:   # app.state.speakers
        ...
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI

from whisper_common.settings import ServiceSettings
from whisper_common.speakers.library import LIBRARY, SPEAKERS_FIELD, Selection, SpeakerLibrary
from whisper_common.speakers.matching import Match, Reference
from whisper_common.speakers.routes import speakers_router
from whisper_common.speakers.settings import SpeakerLibrarySettings
from whisper_common.speakers.store import open_speaker_store

logger = logging.getLogger("whisper_common.speakers")

__all__ = ["LIBRARY", "SPEAKERS_FIELD", "Match", "Reference", "Selection", "SpeakerLibrary", "SpeakerLibrarySettings",
           "serve_speakers", "speakers_router"]


@contextlib.asynccontextmanager
async def serve_speakers(
    app: FastAPI, settings: ServiceSettings, library_settings: SpeakerLibrarySettings
) -> AsyncIterator[SpeakerLibrary]:
    """Open the library's store (`app.state.speakers`), register its eraser, and report voiceprints of another
    embedding model once (in the background: it reads the weights)."""
    store = await asyncio.to_thread(open_speaker_store, settings, library_settings)
    library = SpeakerLibrary(store, library_settings)
    app.state.speakers = library

    async def erase(owner: str) -> int:
        return await asyncio.to_thread(store.erase_owner, owner)

    async def check() -> None:
        try:
            await asyncio.to_thread(library.check_models)
        except Exception as exc:  # noqa: BLE001 - the encoder may be missing here: the routes say so when used
            logger.warning("voiceprint models not checked", extra={"error": str(exc)})

    app.state.erasure.register("voiceprints", erase)
    checking = asyncio.create_task(check(), name="check voiceprint models")
    try:
        yield library
    finally:
        checking.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await checking
        app.state.erasure.unregister("voiceprints")
        store.close()
