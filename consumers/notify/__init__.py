"""The notification edge: alert events from the partitions' alert streams to Prometheus
Alertmanager and to signed webhooks (`python -m consumers notify`). Uses the shared core
(telemetry/), never another edge."""
