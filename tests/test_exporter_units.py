"""The exporter's pieces without BPF: histogram buckets, the series bound, --probes,
and the runners' isolation (a slow or failing probe never holds a scrape or the others)."""

from __future__ import annotations

import threading
import time

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter import specs as S
from exporter.cli import parse_listen
from exporter.collector import ProbeCollector
from exporter.families import FINITE_SLOTS, Families
from exporter.runner import DOWN, UP, ProbeRunner
from exporter.series import OTHER, BoundedCounters, StageSeries, UpcallSeries
from vocab.hist import Log2Hist
from probes.runtime.kernel import detect
from probes.runtime.params import ParamError
from probes.system_latency import SystemLatencySummary
from wizard.main import main


def _samples(fams: Families) -> dict:
    registry = CollectorRegistry()
    registry.register(type("C", (), {"collect": lambda self: list(fams)})())
    text = generate_latest(registry).decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_log2_slots_become_cumulative_buckets_with_exact_bounds():
    fams = Families()
    # slot 0 (0-1 us), slot 3 (8-15 us), slot 24 (the last finite), slot 30 (+Inf only)
    fams.log2_histogram("netsleuth_t_seconds", "t", {}, {0: 2, 3: 5, 24: 1, 30: 4})
    got = _samples(fams)
    bucket = {dict(k[1])["le"]: v for k, v in got.items() if k[0] == "netsleuth_t_seconds_bucket"}
    assert len(bucket) == FINITE_SLOTS + 1
    assert bucket["2e-06"] == 2  # slot 0: whole us 0 and 1, i.e. below 2 us
    assert bucket["8e-06"] == 2 and bucket["1.6e-05"] == 7  # slot 3 is [8 us, 16 us)
    assert bucket["33.554432"] == 8 and bucket["+Inf"] == 12
    assert got[("netsleuth_t_seconds_count", frozenset())] == 12
    values = [bucket[le] for le in sorted(bucket, key=float)]
    assert values == sorted(values)


def test_series_past_the_bound_fold_into_other_and_are_counted():
    c = BoundedCounters(("reason", "device"), limit=3)
    for i in range(5):
        c.add(("NO_SOCKET", f"eth{i}"), 10)
    c.add(("NO_SOCKET", "eth0"), 1)  # known before the bound: still its own series
    c.add(("NO_SOCKET", "eth4"), 1)  # folded again: counted once as a folded set
    series = dict((tuple(lbl.values()), n) for lbl, n in c.samples())
    assert len(series) == 4 and series[(OTHER, OTHER)] == 21 and series[("NO_SOCKET", "eth0")] == 11
    assert c.folded == 2 and sum(series.values()) == 52


def test_stage_and_upcall_records_add_up_across_reads():
    probe = SystemLatencySummary(detect(), phy_interface="lo", direction="rx")
    stages = StageSeries(probe, 100)
    first, second = Log2Hist({2: 3, 5: 1}).summary(), Log2Hist({2: 1, 9: 2}).summary()
    for h in (first, second):
        stages.add([{"type": "system_latency_summary", "evicted_unfinished": 1, "pairs": [
            {"from": "PHY_RX", "to": "OVS_RX", "total": False, **h},
            {"from": "PHY_RX", "to": "PROTO_RCV", "total": True, **h}]}])
    fams = Families()
    stages.emit(fams)
    got = _samples(fams)
    labels = {"device": "lo", "direction": "rx", "path": "system", "stage": "PHY_RX->OVS_RX"}
    assert got[("netsleuth_stage_latency_seconds_count", frozenset(labels.items()))] == 7
    assert got[("netsleuth_stage_latency_seconds_bucket", frozenset({**labels, "le": "8e-06"}.items()))] == 4
    assert stages.lost == 2
    upcalls = UpcallSeries(None, 100)
    upcalls.add([{"type": "ovs_upcall_summary", "upcalls": 5, "answered": 4, "executes_without_upcall": 0,
                  "histogram": Log2Hist({6: 4}).summary()}] * 2)
    fams = Families()
    upcalls.emit(fams)
    got = _samples(fams)
    assert got[("netsleuth_ovs_upcalls_total", frozenset())] == 10
    assert got[("netsleuth_ovs_upcall_latency_seconds_bucket", frozenset({("le", "0.000128")}))] == 8


@pytest.mark.parametrize("text, complaint", [
    ("nosuch", "NAME one of"), ("drop-summary:interval=5", "flag=value"), ("drop-summary:device", "flag=value"),
    ("drop-summary,drop-summary:l4-protocol=udp", "each probe once"), ("drop-summary-details", "NAME one of"),
    (",", "NAME[:flag=value"),
])
def test_bad_probe_lists_are_one_line_errors(text, complaint):
    with pytest.raises(ParamError) as e:
        S.parse(text, detect())
    assert complaint in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("argv", [["--listen", "nonsense"], ["--listen", "127.0.0.1:0"], ["--probes", "nosuch"],
                                  ["--read-timeout", "-1"], ["--max-drop-series", "many"]])
def test_exporter_bad_flags_exit_2_with_one_line(argv, capsys):
    assert main(["exporter", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("netsleuth exporter: ") and err.count("\n") == 1


def test_listen_forms():
    assert parse_listen(":10374") == ("0.0.0.0", 10374)
    assert parse_listen("[::1]:9") == ("::1", 9)


class FakeProbe:
    """Stands for a started probe: records from ``read``, which may stall or fail."""

    def __init__(self, stall: threading.Event | None = None, fail_after: int | None = None):
        self.stall, self.fail_after, self.reads, self.closed = stall, fail_after, 0, False

    def start(self):
        pass

    def describe_attach(self):
        return "nowhere"

    def gone(self):
        return None

    def read(self):
        self.reads += 1
        if self.stall is not None:
            self.stall.wait(30)
        if self.fail_after is not None and self.reads > self.fail_after:
            raise OSError("map gone")
        return [{"type": "drop_summary", "uncounted_table_full": 0, "entries": [
            {"count": 1, "reason": "NO_SOCKET", "location": "__udp4_lib_rcv+0x1", "device": "lo", "netns": 1}]}]

    def close(self):
        self.closed = True


def _runner(probe, name="drop-summary") -> ProbeRunner:
    r = ProbeRunner(S.Spec(name, "drop-summary", probe=probe), 100)
    r.start()
    deadline = time.monotonic() + 10
    while r.state != UP and time.monotonic() < deadline:
        time.sleep(0.01)
    return r


def test_a_stalled_read_is_not_waited_for_past_the_timeout_and_others_keep_counting():
    stall = threading.Event()
    slow, fine = _runner(FakeProbe(stall), "slow"), _runner(FakeProbe(), "fine")
    try:
        collector = ProbeCollector([slow, fine], read_timeout=0.3)
        began = time.monotonic()
        fams = collector.collect()
        took = time.monotonic() - began
        assert took < 3, f"the scrape waited {took:.1f} s for a stalled read"
        assert slow.read_timeouts == 1 and fine.read_timeouts == 0
        drops = next(f for f in fams if f.name == "netsleuth_drops")
        assert [s.value for s in drops.samples] == [1]  # the fine one's; the slow one has read nothing yet
        assert collector.collect() and slow.read_timeouts == 2
    finally:
        stall.set()
        for r in (slow, fine):
            r.stop()
            r.join(5)
    assert fine.series.drops.counts[("NO_SOCKET", "__udp4_lib_rcv", "lo", "1")] == 2


def test_a_failing_read_marks_that_probe_down_and_closes_it():
    bad_probe = FakeProbe(fail_after=1)
    bad, good = _runner(bad_probe, "bad"), _runner(FakeProbe(), "good")
    try:
        collector = ProbeCollector([bad, good], read_timeout=5)
        collector.collect()
        collector.collect()
        bad.join(5)
        assert bad.state == DOWN and "map gone" in bad.reason and bad.read_errors == 1 and bad_probe.closed
        assert good.state == UP
        fams = {f.name: f for f in collector.collect()}
        up = {s.labels["probe"]: s.value for s in fams["netsleuth_probe_up"].samples}
        assert up == {"bad": 0, "good": 1}
    finally:
        for r in (bad, good):
            r.stop()
            r.join(5)


def test_an_address_in_use_is_one_line_and_exit_1(capsys):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["exporter", "--listen", f"127.0.0.1:{port}", "--probes", "ovs-upcall-summary"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"netsleuth exporter: cannot listen on 127.0.0.1:{port}: ") and err.count("\n") == 1


def test_the_default_list_never_stops_on_a_probe_it_cannot_start(monkeypatch):
    """A tier-1 probe without metrics here, or one needing a flag no default gives, is listed
    down with why (probes land on other branches while this one is written)."""
    from probes.base import Flag, Probe

    class NeedsFlag(Probe):
        name, title, tier, cost, description = "needs-flag", "t", 1, "low", "d"
        flags = (Flag("vm-interface", "interface", "a tap", required=True),)
        unavailable_reason = classmethod(lambda cls, caps: None)

    monkeypatch.setattr(S, "exportable", lambda: {"needs-flag": NeedsFlag})
    (spec,) = S.default(detect(), lambda: [])
    assert spec.probe is None and spec.down_reason == S.NO_SERIES
    monkeypatch.setitem(S.SERIES, "needs-flag", UpcallSeries)
    (spec,) = S.default(detect(), lambda: [])
    assert spec.probe is None and spec.down_reason.startswith("not started by default: --vm-interface is required")


def test_tap_ring_records_add_up():
    from exporter.series import TapRingSeries

    taps = TapRingSeries(None, 100)
    record = {"type": "tun_ring", "device": "vnet3", "queue": 1, "drops": 7,
              "reasons": {"FULL_RING": 5, "DEV_READY": 2}, "size": 256, "xmits": 100, "found_full": 5,
              "max_pending": 256, "fill_pct": 100.0}
    taps.add([record])
    taps.add([dict(record, fill_pct=25.0, xmits=50, found_full=0, reasons={"FULL_RING": 1})])
    fams = Families()
    taps.emit(fams)
    got = _samples(fams)
    q = {"device": "vnet3", "queue": "1"}
    assert got[("netsleuth_tap_drops_total", frozenset({**q, "reason": "FULL_RING"}.items()))] == 6
    assert got[("netsleuth_tap_drops_total", frozenset({**q, "reason": "DEV_READY"}.items()))] == 2
    assert got[("netsleuth_tap_ring_packets_total", frozenset(q.items()))] == 150
    assert got[("netsleuth_tap_ring_fill_ratio", frozenset(q.items()))] == 0.25  # the last interval's
    assert got[("netsleuth_tap_ring_size", frozenset(q.items()))] == 256


def test_instances_are_told_apart_by_their_labels_only():
    caps = detect()
    with pytest.raises(ParamError):  # same labels (device lo, rx): the series would collide
        S.parse("system-latency-summary:phy-interface=lo:direction=rx,"
                "system-latency-summary:phy-interface=lo:direction=rx:protocol=udp", caps)
    specs = S.parse("system-latency-summary:phy-interface=lo:direction=rx,"
                    "system-latency-summary:phy-interface=lo:direction=tx", caps)
    assert [s.id for s in specs] == ["system-latency-summary:phy-interface=lo:direction=rx",
                                     "system-latency-summary:phy-interface=lo:direction=tx"]
    with pytest.raises(ParamError):  # drop-summary's series carry no instance label
        S.parse("drop-summary,drop-summary:device=lo", caps)
