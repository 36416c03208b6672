"""`netsleuth exporter`: the tier-1 probes as a Prometheus exporter (docs/exporter.md).

It composes probes (their start/read/close and records) into metrics; the probes
know nothing of it.
"""
