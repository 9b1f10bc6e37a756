"""The OpenTelemetry SDK set up from ``tracing:``: a tracer provider of the engine's own that exports over
OTLP/HTTP in batches, from a thread of the SDK's, never from the event loop.

The provider is the engine's, not the process-wide one, so two engines in a process (or an app that has its
own OpenTelemetry set-up) do not share or overwrite each other's. What the config leaves unset, the SDK reads
from the standard variables: ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``/``OTEL_EXPORTER_OTLP_ENDPOINT``,
``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``,
``OTEL_BSP_*`` (batching) and ``OTEL_SDK_DISABLED``.
"""

from __future__ import annotations

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from vocable.config.model import TracingConfig

DEFAULT_SERVICE_NAME = "vocable"
TRACES_PATH = "/v1/traces"


def traces_url(endpoint: str) -> str:
    """``http://collector:4318`` -> ``http://collector:4318/v1/traces`` (a URL with the path already is kept)."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith(TRACES_PATH) else endpoint + TRACES_PATH


def make_resource(config: TracingConfig) -> Resource:
    from vocable import __version__

    attributes: dict[str, str] = {SERVICE_VERSION: __version__}
    if config.service_name:
        attributes[SERVICE_NAME] = config.service_name  # the config wins over OTEL_SERVICE_NAME
    resource = Resource.create(attributes)
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):  # nothing named it
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    return resource


def make_provider(config: TracingConfig) -> TracerProvider:
    provider = TracerProvider(resource=make_resource(config))
    exporter = OTLPSpanExporter(endpoint=traces_url(config.endpoint) if config.endpoint else None)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider
