"""Prometheus metrics, one registry per app so tests can build many apps."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.heartbeats = Counter(
            "idlegrid_heartbeats_total", "Heartbeats accepted", registry=self.registry
        )
        self.beats_refused = Counter(
            "idlegrid_beats_refused_total",
            "Beats dropped, by reason (core/beats.py)",
            ["reason"],
            registry=self.registry,
        )
        self.registrations = Counter(
            "idlegrid_registrations_total", "Device registrations", ["new"], registry=self.registry
        )
        self.errors = Counter(
            "idlegrid_request_errors_total",
            "Requests refused, by code",
            ["code"],
            registry=self.registry,
        )
        self.devices = Gauge(
            "idlegrid_devices", "Devices by status", ["status"], registry=self.registry
        )
        self.flush_seconds = Histogram(
            "idlegrid_liveness_flush_seconds",
            "Time to write one liveness batch",
            registry=self.registry,
        )
        self.flush_failures = Counter(
            "idlegrid_liveness_flush_failures_total",
            "Liveness flushes that failed",
            registry=self.registry,
        )
