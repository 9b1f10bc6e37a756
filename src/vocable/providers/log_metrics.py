"""``log``: every turn's latency breakdown as one structured log line with session and turn ids."""

from __future__ import annotations

from typing import Any

import structlog
from pydantic import Field

from vocable.providers.base import MetricsSink, ProviderSettings


class LogMetricsSettings(ProviderSettings):
    level: str = Field(default="info", pattern="^(debug|info|warning)$")


class LogMetrics(MetricsSink):
    name = "log"
    Settings = LogMetricsSettings

    def __init__(self, settings: LogMetricsSettings | None = None) -> None:
        super().__init__(settings)
        self._log = structlog.get_logger("vocable.metrics")

    def record(self, metrics: Any) -> None:
        figures = {k: v for k, v in metrics.figures().items() if v is not None}
        getattr(self._log, self.settings.level)(
            "turn_metrics", session_id=metrics.session_id, turn_id=metrics.turn_id, **figures
        )
