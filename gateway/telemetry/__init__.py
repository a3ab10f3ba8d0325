"""What the gateway tells operators: traces (`tracing`), Prometheus metrics (`metrics`), JSON log
lines (`logging`), readiness (`health`), the per-request reporting that feeds them (`requests`), and
the HTTP endpoints (`endpoints`). `service.Telemetry` ties them to an app's lifespan."""
