"""The VM-path tier-1 probes' series (kvm-irqfd-stats-summary, vhost-eventfd-count), from the
records those probes printed in the lab against a real nested VM (tests/data/*.json; the
probes need kprobes, which this host lacks): totals kept exactly across reads, the VM named
by its QEMU `-name` (a real process here holds one), bounded label sets, and a scrape that
`promtool check metrics` (Prometheus's naming lint) passes without a warning."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter.families import Families
from exporter.series import OTHER, SERIES, IrqfdSeries, VhostSeries
from tests.promenv import histogram_quantile

DATA = Path(__file__).resolve().parent / "data"
IRQFD = json.loads((DATA / "kvm_irqfd_lab.json").read_text())
VHOST = json.loads((DATA / "vhost_lab_records.json").read_text())


def exposition(*series) -> str:
    fams = Families()
    for s in series:
        s.emit(fams)
    registry = CollectorRegistry()
    registry.register(type("C", (), {"collect": lambda self: list(fams)})())
    return generate_latest(registry).decode()


def samples(text: str) -> dict:
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


@pytest.fixture
def qemu_names():
    """Processes whose command lines carry QEMU's `-name` forms; pid -> the name they give."""
    procs = {}
    for arg in ("guest=elab-web,debug-threads=on", "elab-db"):
        p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "-name", arg])
        procs[p] = arg.split(",")[0].removeprefix("guest=")
    yield {p.pid: name for p, name in procs.items()}
    for p in procs:
        p.kill()
        p.wait()


def irqfd_records(pid: int) -> list[list[dict]]:
    """The lab's reads (control, then the stopped VM), as if from the VM of ``pid``."""
    reads = copy.deepcopy([IRQFD["control"]["records"], IRQFD["stopped"]["records"]])
    for records in reads:
        for r in records:
            for e in r["entries"]:
                e["pid"] = pid
    return reads


def test_the_vm_path_probes_have_series():
    assert SERIES["kvm-irqfd-stats-summary"] is IrqfdSeries and SERIES["vhost-eventfd-count"] is VhostSeries


def test_irqfd_counts_and_latency_add_up_per_vm_name(qemu_names):
    (web, _db) = qemu_names
    series = IrqfdSeries(None, 100)
    reads = irqfd_records(web)
    for records in reads:
        series.add(records)
    got = samples(exposition(series))
    vm = frozenset({"vm": "elab-web"}.items())
    records = [r for rs in reads for r in rs]
    for field, name, _ in IrqfdSeries.COUNTERS:
        assert got[(name + "_total", vm)] == sum(r[field] for r in records), field
    entries = [e for r in records for e in r["entries"]]
    timed = sum(e["count"] for e in entries)
    assert timed == sum(r["injected"] for r in records)  # every injection timed in the lab (no posted)
    assert got[(IrqfdSeries.LATENCY + "_count", vm)] == timed
    # The stopped VM's ~200 ms injections are in the tail: P99.9 lies at or above 131 ms.
    buckets = {float(dict(k[1])["le"]): v for k, v in got.items() if k[0] == IrqfdSeries.LATENCY + "_bucket"}
    assert histogram_quantile(0.999, buckets) >= 0.131072
    assert {dict(k[1]).get("vm") for k in got if k[0].startswith("netsleuth_kvm_irqfd")} == {"elab-web"}


def test_irqfd_vms_past_the_bound_fold_into_other(qemu_names):
    web, db = qemu_names
    series = IrqfdSeries(None, 1)
    series.add(irqfd_records(web)[0])
    series.add(irqfd_records(db)[0])
    got = samples(exposition(series))
    signals = {dict(k[1])["vm"]: v for k, v in got.items() if k[0] == "netsleuth_kvm_irqfd_signals_total"}
    per_read = IRQFD["control"]["records"][0]["signals"]
    assert signals == {"elab-web": per_read, OTHER: per_read}
    assert got[("netsleuth_series_folded_total", frozenset({"metric": IrqfdSeries.LATENCY}.items()))] == 1


def test_a_vm_without_a_name_or_gone_is_labelled_empty_not_by_pid():
    series = IrqfdSeries(None, 100)
    series.add(irqfd_records(2 ** 22 + 1)[0])  # above pid_max's limit: no such process
    got = samples(exposition(series))
    assert {dict(k[1]).get("vm") for k in got if k[0] == "netsleuth_kvm_irqfd_signals_total"} == {""}


def test_vhost_counts_add_up_per_virtqueue():
    series = VhostSeries(None, 100)
    series.add(VHOST["counts"])
    series.add(VHOST["counts"])  # a second read adds (the probe's records are deltas)
    got = samples(exposition(series))
    for vq in VHOST["counts"][0]["vqs"]:
        labels = frozenset({"device": vq["device"], "queue": str(vq["queue"]), "vq": vq["vq"]}.items())
        for field, name, _ in VhostSeries.COUNTERS:
            assert got[(name + "_total", labels)] == 2 * vq[field], (field, vq["vq"])
    assert got[("netsleuth_vhost_kicks_total", frozenset({"device": "vm1", "queue": "0", "vq": "tx"}.items()))] == 62


def test_vhost_without_kvm_has_no_irqfd_series_and_the_bound_holds():
    record = copy.deepcopy(VHOST["counts"][0])
    for vq in record["vqs"]:
        vq["signals"] = vq["signals_no_irqfd"] = None  # kvm not loaded: the probe cannot tell
    series = VhostSeries(None, 1)
    series.add([record])
    got = samples(exposition(series))
    assert not [k for k in got if k[0] in ("netsleuth_vhost_irqfd_signals_total",
                                           "netsleuth_vhost_signals_without_irqfd_total")]
    kicks = {tuple(sorted(dict(k[1]).items())): v for k, v in got.items() if k[0] == "netsleuth_vhost_kicks_total"}
    assert len(kicks) == 2  # rx kept (the first), tx folded into other: the bound is 1 + other
    assert (("device", OTHER), ("queue", OTHER), ("vq", OTHER)) in kicks


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian's prometheus) missing")
def test_promtool_passes_the_vm_series_without_a_warning(qemu_names):
    web, _ = qemu_names
    irqfd, vhost = IrqfdSeries(None, 100), VhostSeries(None, 100)
    for records in irqfd_records(web):
        irqfd.add(records)
    vhost.add(VHOST["counts"])
    text = exposition(irqfd, vhost)
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert check.returncode == 0 and not (check.stdout + check.stderr).strip(), check.stdout + check.stderr
