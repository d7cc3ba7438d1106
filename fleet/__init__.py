"""The fleet side: `fleet-exporter`, which turns every device's status and stats on MQTT into Prometheus
metrics (fleet/exporter.py), and its benchmark (fleet/bench.py)."""
