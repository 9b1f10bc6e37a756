"""``Engine(freeze_gc=True)``, as ``vocable serve`` runs: what is alive after start-up leaves the collector's sight."""

from __future__ import annotations

import asyncio
import gc
import weakref

from vocable.testing.scripted import SCRIPTED_PLUGINS, scripted_config

from vocable import Engine


async def test_freeze_after_start_and_sessions_still_collected() -> None:
    gc.unfreeze()
    engine = Engine.from_dict(scripted_config(), autoload=False, plugins=SCRIPTED_PLUGINS, freeze_gc=True)
    try:
        await engine.start()
        frozen = gc.get_freeze_count()
        assert frozen > 1000  # modules, config, providers: out of every full collection from now on
        session = await engine.open_session(transport="test", pace=False)
        await session.send_text("hello")
        await engine.close_session(session)
        gone = weakref.ref(session)
        del session
        await asyncio.sleep(0.05)  # the cancelled tasks' done-callbacks run on the next loop turns
        gc.collect()
        assert gone() is None  # what sessions make after start-up is collected as usual
        assert gc.get_freeze_count() <= frozen
    finally:
        await engine.stop()
        gc.unfreeze()


async def test_embedded_engines_leave_the_collector_alone() -> None:
    gc.unfreeze()
    engine = Engine.from_dict(scripted_config(), autoload=False, plugins=SCRIPTED_PLUGINS)
    await engine.start()
    try:
        assert gc.get_freeze_count() == 0
    finally:
        await engine.stop()
