"""The latency histograms end to end, as far as a host without kprobes allows: the upcall
and stage-latency programs are loaded into this kernel (not attached), known counts are
written into their real maps, the probes' own read code turns them into records, and the
exporter's runners, collector and HTTP server serve them to a real Prometheus, whose
histogram_quantile must land where the slots put it.  The lab runs the same probes
attached (docs/exporter.md, "Tests and the lab")."""

from __future__ import annotations

import ctypes as ct
import os
import shutil

import pytest
from prometheus_client import CollectorRegistry

from exporter.collector import ProbeCollector
from exporter.runner import UP, ProbeRunner
from exporter.server import app, serve
from exporter.specs import Spec
from probes.ovs_upcall import OvsUpcallSummary
from probes.runtime.attach import FunctionHooks
from probes.runtime.loader import load
from probes.stage_latency import FIELDS
from probes.system_latency import SystemLatencySummary
from tests.promenv import Prometheus, free_port, histogram_quantile, http_get, scraped_buckets, wait_until
from tests.test_kprobe_programs_verify import CAPS

pytestmark = [pytest.mark.bpf, pytest.mark.skipif(os.geteuid() != 0, reason="needs root to load BPF"),
              pytest.mark.skipif(shutil.which("prometheus") is None, reason="Debian's prometheus is not installed")]


class UnattachedUpcalls(OvsUpcallSummary):
    """ovs-upcall-summary loaded but not attached (no kprobes here)."""

    @classmethod
    def unavailable_reason(cls, caps):
        return None

    def load(self):
        bpf = load("ovs_upcall.bpf.c", self.c_defines(), FIELDS)
        self.hooks = FunctionHooks(bpf, "auto")  # nothing attached: the maps are written by hand
        self.start_reading()
        return bpf


class UnattachedStages(SystemLatencySummary):
    @classmethod
    def unavailable_reason(cls, caps):
        return None

    def load(self):
        self.stages, devices = self.path()
        self.attached = []
        bpf = load("stage_latency.bpf.c", self.c_defines(self.stages, devices), FIELDS)
        self.hooks = FunctionHooks(bpf, "auto")  # nothing attached: the maps are written by hand
        self.start_reading()
        return bpf


def per_cpu(table, value: int):
    """A per-CPU leaf holding ``value`` on the first CPU."""
    return table.Leaf(*([value] + [0] * (len(table.Leaf()) - 1)))


@pytest.fixture
def served():
    runners = [ProbeRunner(Spec("ovs-upcall-summary", "ovs-upcall-summary", UnattachedUpcalls(caps=CAPS)), 100),
               ProbeRunner(Spec("system-latency-summary:phy-interface=lo:direction=tx", "system-latency-summary",
                                UnattachedStages(caps=CAPS, phy_interface="lo", direction="tx")), 100)]
    registry = CollectorRegistry()
    registry.register(ProbeCollector(runners, read_timeout=5))
    port = free_port()
    server, _ = serve("127.0.0.1", port, app(registry, runners))
    try:
        for r in runners:
            r.start()
        wait_until("both probes loaded", lambda: all(r.state == UP for r in runners), 120)
        yield f"127.0.0.1:{port}", runners
    finally:
        server.shutdown()
        server.server_close()
        for r in runners:
            r.stop()
        for r in runners:
            r.join(30)


def test_histogram_quantiles_land_where_the_slots_put_them(served):
    address, (upcalls, stages) = served
    # 98 upcalls answered in [64 us, 128 us) (slot 6), 2 in [2048 us, 4096 us) (slot 11).
    slots, totals = upcalls.probe.bpf[b"slots"], upcalls.probe.bpf[b"totals"]
    slots[ct.c_int(6)] = per_cpu(slots, 98)
    slots[ct.c_int(11)] = per_cpu(slots, 2)
    totals[ct.c_int(0)], totals[ct.c_int(1)] = per_cpu(totals, 103), per_cpu(totals, 100)
    # 2 packets from OVS_PROCESS (stage 3) to OVS_VPORT_SEND (stage 5) in [16 us, 32 us) (slot 4).
    hists = stages.probe.bpf[b"hists"]
    hists[hists.Key(prev=3, cur=5, slot=4)] = per_cpu(hists, 2)

    prom = Prometheus([address])
    try:
        upcall_q = "histogram_quantile({q}, netsleuth_ovs_upcall_latency_seconds_bucket)"
        wait_until("the upcall histogram scraped", lambda: prom.query(upcall_q.format(q=0.5)), 60)
        # Prometheus interpolates inside the bucket: (64 us, 128 us] for P50, (2048 us, 4096 us] for P99.
        assert prom.value(upcall_q.format(q=0.5)) == pytest.approx(64e-6 + 50 / 98 * 64e-6, rel=1e-9)
        assert prom.value(upcall_q.format(q=0.99)) == pytest.approx(2048e-6 + 1 / 2 * 2048e-6, rel=1e-9)
        assert prom.value("netsleuth_ovs_upcall_latency_seconds_count") == 100
        assert prom.value('netsleuth_ovs_upcall_latency_seconds_bucket{le="0.000128"}') == 98
        assert prom.value("netsleuth_ovs_upcalls_total") == 103
        assert prom.value("netsleuth_ovs_upcalls_answered_total") == 100
        stage = ('netsleuth_stage_latency_seconds_bucket{path="system",direction="tx",device="lo",'
                 'stage="OVS_PROCESS->OVS_VPORT_SEND"}')
        assert prom.value(f"histogram_quantile(0.5, {stage})") == pytest.approx(24e-6, rel=1e-9)
        # The lab computes quantiles from scraped text (no Prometheus in its guest): the same
        # algorithm must give what Prometheus gives, edges included (a rank on a bucket's bound, q=1).
        text = http_get(f"http://{address}/metrics")
        for q in (0.01, 0.5, 0.98, 0.99, 1.0):
            ours = histogram_quantile(q, scraped_buckets(text, "netsleuth_ovs_upcall_latency_seconds"))
            assert ours == pytest.approx(prom.value(upcall_q.format(q=q)), rel=1e-12), q
        stage_labels = {"path": "system", "direction": "tx", "device": "lo", "stage": "OVS_PROCESS->OVS_VPORT_SEND"}
        for q in (0.5, 1.0):
            ours = histogram_quantile(q, scraped_buckets(text, "netsleuth_stage_latency_seconds", stage_labels))
            assert ours == pytest.approx(prom.value(f"histogram_quantile({q}, {stage})"), rel=1e-12), q
        # A second scrape reads again: counts only grow (nothing cleared).
        slots[ct.c_int(6)] = per_cpu(slots, 198)
        wait_until("the new upcalls scraped",
                   lambda: prom.value("netsleuth_ovs_upcall_latency_seconds_count") == 200, 30)
    finally:
        prom.stop()
