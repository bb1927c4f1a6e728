"""Optional OpenTelemetry tracing: one trace from the gateway through the queue to the worker and engine.

`base` holds the interface every layer uses and its no-op default; `otel` the
OpenTelemetry implementation, imported only when tracing is on and the `otel`
extra is installed.
"""
