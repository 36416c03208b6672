"""`netsleuth exporter` on the real kprobe paths (guest side: tests/lab/exporter_checks.py).

Ground truth: datagrams host -> uplink namespace, each upcalled while ovs-vswitchd was
stopped for a known time (12 to 400 ms).  Each one's upcall wait, and its whole way through
the host's stack and OVS (the stage probe's TOTAL), lies between the time from sendto()
returning (after the upcall) to the resume, and its one-way time.  histogram_quantile over
the increase between two scrapes, computed as Prometheus does (tests/promenv.py), must land
in the log2 bucket the matching order statistic's bounds allow.  Then the openvswitch module
is unloaded under the exporter: its OVS probes must show as detached, with the reason.
"""

from __future__ import annotations

import math

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.lab.expect import step_ok
from tests.lab.test_lab_latency import assert_samples_within
from tests.promenv import bucket_increase, histogram_quantile, scraped_buckets

pytestmark = [pytest.mark.lab, pytest.mark.timeout(1800)]

QUANTILES = (0.25, 0.5, 0.9, 0.99)
UPCALL = ("netsleuth_ovs_upcall_latency_seconds", {})


def exporter(lab: dict) -> dict:
    step_ok(lab, "exporter")
    return lab["exporter"]


def stage_total(ex: dict) -> tuple[str, dict]:
    device = ex["probes"]["stages"].split("phy-interface=")[1].split(":")[0]
    return "netsleuth_stage_latency_seconds", {"path": "system", "direction": "tx", "device": device,
                                               "stage": "TOTAL"}


def bounds_us(ex: dict) -> list[tuple[float, float]]:
    """[low, high] of each datagram's wait: resume - sendto() returning, its one-way time."""
    return [((p["resumed_mono_ns"] - p["returned_mono_ns"]) / 1000, p["one_way_us"]) for p in ex["sent"]]


def increase(ex: dict, name: str, labels: dict) -> dict[float, float]:
    return bucket_increase(scraped_buckets(ex["before"], name, labels), scraped_buckets(ex["after"], name, labels))


def log2_floor(us: float) -> float:
    """The lower bound (us) of the kernel's log2 slot holding ``us`` (whole microseconds)."""
    return float(1 << max(int(us), 1).bit_length() - 1)


def as_slots(buckets: dict[float, float]) -> list[dict]:
    """Per-bucket counts as [low, high) in microseconds (assert_samples_within's form)."""
    out, prev_le, prev = [], 0.0, 0.0
    for le in sorted(buckets):
        if buckets[le] > prev:
            out.append({"low": prev_le * 1e6, "high": le * 1e6, "count": int(buckets[le] - prev)})
        prev_le, prev = le, buckets[le]
    return out


@pytest.mark.parametrize("histogram", ["upcall", "stage_total"])
def test_histogram_quantile_lands_in_the_bucket_the_known_pauses_allow(lab, histogram):
    ex = exporter(lab)
    name, labels = UPCALL if histogram == "upcall" else stage_total(ex)
    bounds = bounds_us(ex)
    n = len(bounds)
    assert n == len(ex["pauses_ms"]) and ex["missed"] == n, ex["missed"]  # one upcall each, no other
    buckets = increase(ex, name, labels)
    assert buckets[math.inf] == n, buckets  # every datagram counted once, nothing else
    assert max(v for le, v in buckets.items() if le != math.inf) == n  # none past the last finite bucket
    assert_samples_within(as_slots(buckets), bounds)
    lows, highs = sorted(lo for lo, _ in bounds), sorted(hi for _, hi in bounds)
    for q in QUANTILES:
        k = math.ceil(q * n)  # the rank q * n falls in the bucket of the k-th smallest wait
        estimate_us = histogram_quantile(q, buckets) * 1e6
        # That wait lies in [lows[k-1], highs[k-1]]; its bucket [2^i, 2^(i+1)) holds the estimate.
        assert log2_floor(lows[k - 1]) <= estimate_us <= 2 * log2_floor(highs[k - 1]), (q, estimate_us, bounds)


def test_the_pauses_set_the_quantiles_apart(lab):
    """The check above has teeth: the known waits span buckets, so P25 and P99 differ by a bucket or more."""
    ex = exporter(lab)
    buckets = increase(ex, *UPCALL)
    assert histogram_quantile(0.99, buckets) >= 4 * histogram_quantile(0.25, buckets), buckets


def test_an_unloaded_module_detaches_the_exporters_ovs_probes(lab):
    step_ok(lab, "exporter_module_unload")
    u = lab["exporter_unload"]
    assert not u["module_left"], u["rmmod"]
    assert u["exporter_running"]
    infos = {s.labels["probe"]: s.labels for fam in text_string_to_metric_families(u["scrape"])
             if fam.name == "netsleuth_probe_info" for s in fam.samples}
    ids = lab["exporter"]["probes"]
    for probe in ids.values():
        assert infos[probe]["state"] == "detached", infos
        assert infos[probe]["reason"].startswith("kernel module openvswitch was unloaded"), infos
        assert f'netsleuth_probe_up{{probe="{probe}"}} 0.0' in u["scrape"].splitlines()
    step_ok(lab, "exporter_stop")
    assert lab["exporter_stop"]["returncode"] == 0, lab["exporter_stop"]["log"]
    assert "Traceback" not in lab["exporter_stop"]["log"]
    assert lab["kprobes_left"] == []
    assert lab["trampolines_left"] == []  # the latency probes' fentry programs (issue 18)
