"""docs/output-latency-ovs.md documents exactly the fields the latency and OVS probes emit.

The records come from the probes' own code: the latency and upcall programs are
loaded into this kernel (not attached: there are no kprobes here) and read
through their real maps, a few values written into them by hand; ovs-megaflow is
fed events the way its perf-buffer callback copies them (tests/test_ovs_flow_match.py).
"""

from __future__ import annotations

import ctypes as ct
import os
import re
from pathlib import Path

import pytest

from probes.ovs_upcall import OvsUpcallSummary
from probes.runtime.attach import FunctionHooks
from probes.runtime.loader import load, unload
from probes.stage_latency import FIELDS, MAX_STAGES, PktState
from probes.system_latency import SystemLatencyDetails, SystemLatencySummary
from tests.test_kprobe_programs_verify import CAPS
from tests.test_ovs_flow_match import EV_FLOW_DEL, EV_FLOW_NEW, EV_UPCALL, MS, A, B, feed, flow_msg, key_attrs, unloaded

DOC = Path(__file__).resolve().parent.parent / "docs" / "output-latency-ovs.md"


def doc_tables(doc: Path = DOC) -> list[tuple[str, set[str]]]:
    """(the heading and the paragraph before a table, the field names its first column lists)."""
    out, heading, lead, rows, blank = [], "", [], None, False
    for line in doc.read_text().splitlines() + [""]:
        if line.startswith("|"):
            if rows is None:
                rows = set()
            elif not line.startswith("|---"):
                rows |= set(re.findall(r"`([a-z_0-9]+)`", line.split("|")[1]))
            continue
        if rows is not None:
            out.append((" ".join([heading] + lead), rows))
            rows, lead = None, []
        if line.startswith("#"):
            heading, lead = line, []
        elif line.strip():
            lead = (lead if not blank else []) + [line]
        blank = not line.strip()
    return out


def documented(where: str, doc: Path = DOC) -> set[str]:
    (fields,) = [f for context, f in doc_tables(doc) if where in context][:1]
    return fields


@pytest.fixture
def loaded():
    if os.geteuid() != 0:
        pytest.skip("needs root")
    programs = []

    def _load(source, defines):
        bpf = load(source, defines, FIELDS)
        programs.append(bpf)
        return bpf
    yield _load
    for bpf in programs:
        unload(bpf)


@pytest.mark.bpf
def test_latency_summary_and_pairs(loaded):
    probe = SystemLatencySummary(caps=CAPS, phy_interface="lo", direction="tx")
    stages, devices = probe.path()
    probe.stages = stages
    probe.bpf = loaded("stage_latency.bpf.c", probe.c_defines(stages, devices))
    probe.hooks = FunctionHooks(probe.bpf, "auto")  # nothing attached: the maps are written by hand
    probe.start_reading()
    hists = probe.bpf[b"hists"]
    key = hists.Key(prev=3, cur=5, slot=4)
    hists[key] = hists.Leaf(*([2] + [0] * (len(hists.Leaf()) - 1)))  # 2 packets, 16-31 µs, OVS_PROCESS -> OVS_VPORT_SEND
    rec = probe.summary_record()
    assert set(rec) == documented('"system_latency_summary"')
    (p,) = rec["pairs"]
    assert (p["from"], p["to"], p["count"]) == ("OVS_PROCESS", "OVS_VPORT_SEND", 2)
    assert set(p) == documented("Each pair:")


def test_latency_event_and_stages():
    probe = SystemLatencyDetails(caps=CAPS, phy_interface="lo", direction="tx", latency_threshold="10")
    probe.stages, _ = probe.path()
    st = PktState()
    st.stages_seen, st.first_ns, st.last_ns, st.ip_len = 0b1000011, 1000, 90_000, 84
    for i, t in ((0, 1000), (1, 5000), (6, 90_000)):
        st.stage_ns[i], st.stage_len[i], st.stage_cpu[i] = t, 98, 1
        st.stage_dev[16 * i:16 * i + 4] = list(b"phy0")
    e = probe._event(st)
    assert set(e) == documented('"system_latency_event"')
    assert [s["stage"] for s in e["stages"]] == ["IP_SEND", "INTERNAL_XMIT", "DEV_XMIT"] and e["total_us"] == 89.0
    assert set(e["stages"][0]) == documented("Each stage:")
    assert e["stages"][2]["device"] == "phy0" and e["stages"][2]["skb_len"] == 98 and MAX_STAGES == 8


@pytest.mark.bpf
def test_upcall_summary_and_handlers(loaded):
    probe = OvsUpcallSummary(caps=CAPS)
    probe.bpf = loaded("ovs_upcall.bpf.c", probe.c_defines())
    probe.hooks = FunctionHooks(probe.bpf, "auto")  # nothing attached: the maps are written by hand
    probe.start_reading()
    handlers = probe.bpf[b"handlers"]
    handlers[ct.c_uint32(4242)] = handlers.Leaf(count=3, total_ns=3_000_000, max_ns=2_000_000, comm=b"handler7")
    (rec,) = probe.read()
    assert set(rec) == documented('"ovs_upcall_summary"')
    (h,) = rec["handlers"]
    assert (h["tid"], h["comm"], h["upcalls"], h["avg_us"]) == (4242, "handler7", 3, 1000.0)
    assert set(h) == documented("Each handler:")


def test_megaflow_records():
    probe = unloaded(interval="1", storm_threshold="1")
    T = 1_000 * MS
    feed(probe, (T, EV_UPCALL, A), (T + 1 * MS, EV_UPCALL, B),
         (T + 2 * MS, EV_FLOW_NEW, flow_msg(key_attrs(B), b"B" * 16)),
         (T + 3 * MS, EV_UPCALL, B), (T + 4 * MS, EV_UPCALL, B), (T + 5 * MS, EV_FLOW_DEL, flow_msg(None, b"B" * 16)))
    probe._process_batch()
    probe.tracker.expire(T + 10_000 * MS)
    records = probe.take_events() + probe._summary(elapsed=1.0)
    keys: dict[str, set] = {}
    for r in records:
        keys.setdefault(r["type"], set()).update(r)
    assert set(keys) == {"megaflow_upcall", "megaflow_install", "megaflow_delete", "megaflow_summary",
                         "megaflow_upcall_storm", "megaflow_repeated_upcalls", "megaflow_unanswered_upcalls"}
    assert keys["megaflow_upcall"] == documented('"megaflow_upcall"`')
    assert keys["megaflow_install"] | keys["megaflow_delete"] == documented('"megaflow_install"')
    for t in ("megaflow_summary", "megaflow_upcall_storm", "megaflow_repeated_upcalls", "megaflow_unanswered_upcalls"):
        assert keys[t] == documented(f'"{t}"'), t
