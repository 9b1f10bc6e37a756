"""vocable's own dependency-free providers, registered through the same hooks as every other plugin."""

from __future__ import annotations

from collections.abc import Callable

from vocable.plugins.hookspecs import hookimpl
from vocable.providers.backchannel import Backchannel
from vocable.providers.energy_vad import EnergyVAD
from vocable.providers.log_metrics import LogMetrics
from vocable.providers.prometheus import PrometheusMetrics
from vocable.providers.silence_turn import SilenceTurnDetector, STTEndpointing


@hookimpl
def register_providers(register: Callable[[type], None]) -> None:
    register(EnergyVAD)
    register(SilenceTurnDetector)
    register(STTEndpointing)
    register(Backchannel)
    register(LogMetrics)
    register(PrometheusMetrics)
