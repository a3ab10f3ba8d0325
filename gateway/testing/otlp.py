"""A fake OpenTelemetry collector for tests and benchmarks: what the gateway exports, received over
real loopback HTTP (OTLP/HTTP, protobuf)."""

from __future__ import annotations

import gzip
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["FakeCollector"]


class FakeCollector:
    """A minimal OpenTelemetry collector: OTLP/HTTP (protobuf) on loopback, keeping the spans it
    receives. Point `OTEL_EXPORTER_OTLP_ENDPOINT` at `url` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
    at `traces_url`)."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        self.spans: list[Any] = []
        self.resources: list[dict[str, Any]] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["content-length"]))
                if self.headers.get("content-encoding") == "gzip":
                    raw = gzip.decompress(raw)
                if self.path == "/v1/traces":
                    request = ExportTraceServiceRequest.FromString(raw)
                    for resource_spans in request.resource_spans:
                        attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                        collector.resources.append(attributes)
                        for scope in resource_spans.scope_spans:
                            collector.spans.extend(scope.spans)
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def traces_url(self) -> str:
        return f"{self.url}/v1/traces"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
