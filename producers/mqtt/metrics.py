"""The bridge's Prometheus metrics, read from its counts when scraped."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from producers.mqtt.bridge import MqttBridge
from telemetry.metrics import serve


class BridgeCollector(Collector):
    def __init__(self, bridge: MqttBridge) -> None:
        self.bridge = bridge

    def collect(self) -> Iterator:
        status = self.bridge.status()
        for name in self.bridge.counts.as_dict():
            yield CounterMetricFamily(f"telemetry_mqtt_{name}", f"MQTT bridge: {name.replace('_', ' ')}",
                                      value=status[name])
        yield GaugeMetricFamily("telemetry_mqtt_in_flight", "Messages received and not yet acknowledged",
                                value=status["in_flight"])
        yield GaugeMetricFamily("telemetry_mqtt_connected", "1 while connected to the broker",
                                value=1 if status["connected"] else 0)


def start_bridge_metrics(port: int, bridge: MqttBridge) -> None:
    registry = CollectorRegistry()
    registry.register(BridgeCollector(bridge))
    serve(port, registry)
