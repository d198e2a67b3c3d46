"""Telemetry: Prometheus metrics, health, alert rules and their webhook, served over
HTTP on 127.0.0.1 (``server.build_web_app``)."""
