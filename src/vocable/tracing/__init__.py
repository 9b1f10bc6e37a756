"""OpenTelemetry traces of conversations, as a plugin of the observer hooks (docs/tracing.md).

The engine registers ``Tracing`` when the config has a ``tracing:`` section, as it registers persistence. It
starts nothing on the hot path: the spans of a turn (``turn``, and under it ``end_of_turn``, ``stt``, ``llm``
with its ``tool`` calls, ``tts``) are made after the fact from the turn's ``TurnMetrics`` timestamps and from
the times a tap on the session's events saw its reply end, its tools run and its last audio leave, all with
explicit start and end times. The ``conversation`` span, one per session, is their parent; its own parent is
the ``traceparent`` of the request that opened the session, if it had one.

Without OpenTelemetry installed, tracing is a no-op that says, once, how to enable it (``INSTALL_HINT``).
"""

from vocable.tracing.observer import INSTALL_HINT, Tracing

__all__ = ["INSTALL_HINT", "Tracing"]
