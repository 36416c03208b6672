"""The custom collector: at each scrape, ask every probe for a read (bounded wait),
then turn every probe's cumulative totals and state into metric families."""

from __future__ import annotations

import platform
import time
from importlib.metadata import PackageNotFoundError, version

from .families import Families
from .runner import UP, ProbeRunner


def _version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "unknown"


def build_labels() -> dict[str, str]:
    try:
        import bcc

        bcc_version = getattr(bcc, "__version__", "unknown")
    except ImportError:
        bcc_version = "missing"
    return {"version": _version("netsleuth"), "bcc": bcc_version, "kernel": platform.release(),
            "python": platform.python_version()}


class ProbeCollector:
    def __init__(self, runners: list[ProbeRunner], read_timeout: float) -> None:
        self.runners = runners
        self.read_timeout = read_timeout
        self.build = build_labels()

    def collect(self):
        deadline = time.monotonic() + self.read_timeout
        tickets = [(r, r.ask()) for r in self.runners]
        for r, ticket in tickets:
            r.wait(ticket, deadline)
        fams = Families()
        fams.gauge("netsleuth_build_info", "netsleuth's version and what it runs on.", self.build, 1)
        for r in self.runners:
            with r.lock:
                self._emit(r, fams)
        return list(fams)

    @staticmethod
    def _emit(r: ProbeRunner, fams: Families) -> None:
        probe = {"probe": r.id}
        fams.gauge("netsleuth_probe_up", "1 when the probe is attached and read, 0 when it is not "
                   "(netsleuth_probe_info says why).", probe, 1 if r.state == UP else 0)
        fams.gauge("netsleuth_probe_info", "A probe's state, where it is attached, and why it is not running.",
                   {**probe, "state": r.state, "attach": r.attach, "reason": r.reason}, 1)
        fams.counter("netsleuth_probe_read_errors", "Reads of a probe's maps that failed (the probe is then "
                     "closed and down).", probe, r.read_errors)
        fams.counter("netsleuth_probe_read_timeouts", "Scrapes that did not wait for a probe's read past the "
                     "read timeout (served the previous read's totals).", probe, r.read_timeouts)
        if r.series is not None:
            fams.counter("netsleuth_probe_lost_events", "What a probe saw but could not count or attribute "
                         "(drops with the key table full; unfinished packets pushed out of the table).",
                         probe, r.series.lost)
            r.series.emit(fams)
        if r.read_seconds is not None:
            fams.gauge("netsleuth_probe_read_duration_seconds", "How long the probe's last read took.",
                       probe, r.read_seconds)
        for name, entries, capacity in r.maps:
            labels = {**probe, "map": name}
            fams.gauge("netsleuth_map_entries", "Keys in a probe's BPF hash map.", labels, entries)
            fams.gauge("netsleuth_map_max_entries", "Capacity of a probe's BPF hash map.", labels, capacity)
