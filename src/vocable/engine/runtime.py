"""The providers an Engine runs on: created from the resolved config, started once, shared by sessions."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import structlog

from vocable.config.resolve import ProviderChoice, ResolvedConfig
from vocable.engine.breaker import Breaker, breaker_board
from vocable.engine.fallback import LiveProvider
from vocable.engine.retry import RetryPolicy
from vocable.providers.base import LLM, STT, TTS, VAD, InterruptionClassifier, MetricsSink, Provider, TurnDetector

log = structlog.get_logger("vocable.runtime")

DEFAULT_TIMEOUTS_S = {"stt": 10.0, "llm": 10.0, "tts": 10.0, "vad": 10.0, "turn": 10.0, "interruption": 10.0, "metrics": 10.0}


@dataclass(slots=True)
class Runtime:
    """Started provider instances, by kind, in fallback order."""

    stt: list[LiveProvider[STT]] = field(default_factory=list)
    llm: list[LiveProvider[LLM]] = field(default_factory=list)
    tts: list[LiveProvider[TTS]] = field(default_factory=list)
    vad: list[LiveProvider[VAD]] = field(default_factory=list)
    turn: list[LiveProvider[TurnDetector]] = field(default_factory=list)
    interruption: list[LiveProvider[InterruptionClassifier]] = field(default_factory=list)
    metrics: list[LiveProvider[MetricsSink]] = field(default_factory=list)
    started: bool = False

    @classmethod
    def build(cls, resolved: ResolvedConfig) -> Runtime:
        runtime = cls()

        def live(choice: ProviderChoice) -> LiveProvider[Any]:
            provider = choice.cls(choice.settings)
            ref = choice.ref
            timeout = ref.timeout_s or DEFAULT_TIMEOUTS_S[choice.kind]
            return LiveProvider(choice.name, provider, timeout, RetryPolicy(ref.retries, ref.retry_delay_s),
                                Breaker(ref.breaker.failures, ref.breaker.cooldown_s))

        for kind, chain in resolved.chains.items():
            getattr(runtime, kind).extend(live(c) for c in chain)
        runtime.metrics.extend(live(c) for c in resolved.metrics)
        for sink in runtime.metrics:  # a sink that exports breaker state (prometheus) reads it from here
            watch = getattr(sink.provider, "watch_breakers", None)
            if callable(watch):
                watch(runtime.breakers)
        return runtime

    def breakers(self) -> dict[str, dict[str, Breaker]]:
        """``{kind: {provider: breaker}}`` of the llm and tts chains (shared by every session)."""
        return breaker_board({"llm": self.llm, "tts": self.tts})

    def all(self) -> list[LiveProvider[Provider]]:
        return [*self.vad, *self.turn, *self.interruption, *self.stt, *self.llm, *self.tts, *self.metrics]

    async def start(self) -> None:
        """Start (load) every provider; models load in parallel where providers allow."""
        if self.started:
            return
        async def start_one(live: LiveProvider[Provider]) -> None:
            started = asyncio.get_running_loop().time()
            await live.provider.start()
            log.info("provider_ready", kind=live.provider.kind, provider=live.name,
                     seconds=round(asyncio.get_running_loop().time() - started, 3))
        await asyncio.gather(*(start_one(live) for live in self.all()))
        self.started = True

    async def aclose(self) -> None:
        for live in reversed(self.all()):
            try:
                await live.provider.aclose()
            except Exception as exc:
                log.warning("provider_close_failed", provider=live.name, error=str(exc))
        self.started = False

    @property
    def output_sample_rate(self) -> int:
        return self.tts[0].provider.sample_rate if self.tts else 16000
