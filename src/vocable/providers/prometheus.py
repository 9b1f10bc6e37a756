"""``prometheus``: turn latency histograms and counters in the Prometheus text format, at ``GET /metrics``.

Written by hand (the format is small) so each Engine has its own registry and no global state. The engine
hands the sink its circuit breakers (``watch_breakers``), exported as ``<prefix>_breaker_open`` (1 while a
provider is skipped or waiting for its probe) and ``<prefix>_breaker_skips_total``, labelled by kind and
provider.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from pydantic import Field

from vocable.providers.base import MetricsSink, ProviderSettings

FIGURES = ("stt_ms", "llm_ttft_ms", "tts_ttfb_ms", "voice_to_voice_ms", "engine_overhead_ms")
DEFAULT_BUCKETS_MS = (1, 2, 5, 10, 25, 50, 100, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000, 10000)


class PrometheusSettings(ProviderSettings):
    prefix: str = Field(default="vocable", pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$")
    buckets_ms: tuple[float, ...] = DEFAULT_BUCKETS_MS


class Histogram:
    __slots__ = ("buckets", "counts", "total", "count")

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = tuple(sorted(buckets))
        self.counts = [0] * len(self.buckets)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.total += value
        self.count += 1
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1

    def lines(self, name: str) -> list[str]:
        out = [f'{name}_bucket{{le="{format_value(b)}"}} {c}' for b, c in zip(self.buckets, self.counts)]
        out.append(f'{name}_bucket{{le="+Inf"}} {self.count}')
        out.append(f"{name}_sum {format_value(self.total)}")
        out.append(f"{name}_count {self.count}")
        return out


def format_value(value: float) -> str:
    """A sample value as the text format wants it: integers bare, infinities as ``+Inf``/``-Inf``."""
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class PrometheusMetrics(MetricsSink):
    name = "prometheus"
    Settings = PrometheusSettings

    def __init__(self, settings: PrometheusSettings | None = None) -> None:
        super().__init__(settings)
        self.histograms = {f: Histogram(self.settings.buckets_ms) for f in FIGURES}
        self.turns = 0
        self.interrupted = 0
        self._breakers: Callable[[], dict[str, dict[str, Any]]] | None = None

    def watch_breakers(self, breakers: Callable[[], dict[str, dict[str, Any]]]) -> None:
        """Export the engine's breakers: ``breakers()`` gives ``{kind: {provider: Breaker}}``."""
        self._breakers = breakers

    def record(self, metrics: Any) -> None:
        figures = metrics.figures()
        self.turns += 1
        self.interrupted += 1 if figures.get("interrupted") else 0
        for name, histogram in self.histograms.items():
            value = figures.get(name)
            if value is not None:
                histogram.observe(float(value))

    def exposition(self, counters: dict[str, float] | None = None) -> str:
        p = self.settings.prefix
        lines = [
            f"# HELP {p}_turns_total Turns completed.", f"# TYPE {p}_turns_total counter", f"{p}_turns_total {self.turns}",
            f"# HELP {p}_turns_interrupted_total Turns cut short by a barge-in or an interrupt.",
            f"# TYPE {p}_turns_interrupted_total counter", f"{p}_turns_interrupted_total {self.interrupted}",
        ]
        for name, histogram in self.histograms.items():
            metric = f"{p}_{name[:-3]}_milliseconds"
            lines += [f"# HELP {metric} Per-turn {name[:-3].replace('_', ' ')} in milliseconds.",
                      f"# TYPE {metric} histogram", *histogram.lines(metric)]
        lines += self._breaker_lines(p)
        for key, value in (counters or {}).items():
            kind = "counter" if key.endswith("_total") else "gauge"
            lines += [f"# TYPE {p}_{key} {kind}", f"{p}_{key} {format_value(value)}"]
        return "\n".join(lines) + "\n"

    def _breaker_lines(self, p: str) -> list[str]:
        board = self._breakers() if self._breakers is not None else {}
        series = [(f'{{kind="{_label(kind)}",provider="{_label(name)}"}}', breaker)
                  for kind, named in board.items() for name, breaker in named.items()]
        if not series:
            return []
        return [
            f"# HELP {p}_breaker_open 1 while the provider's circuit breaker is open or half-open, else 0.",
            f"# TYPE {p}_breaker_open gauge",
            *(f"{p}_breaker_open{labels} {int(b.state != 'closed')}" for labels, b in series),
            f"# HELP {p}_breaker_skips_total Requests that skipped the provider because its breaker was open.",
            f"# TYPE {p}_breaker_skips_total counter",
            *(f"{p}_breaker_skips_total{labels} {b.skips}" for labels, b in series),
        ]


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
