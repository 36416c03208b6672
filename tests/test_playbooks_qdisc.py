"""The qdisc rules (rules-qdisc.yaml) on qdisc-drops records, without BPF.

The base records are real: a tbf overflowing in a namespace, as tests/test_qdisc_drops.py
makes it (`sudo .venv/bin/python -m tests.test_playbooks_qdisc` records them again into
tests/data/qdisc-drops-tbf.json).  The causes this host's kernel cannot make (it has no
codel/fq_codel, and veth never refuses a packet, so never requeues) are those records with
the fields such a qdisc reports changed.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from playbooks import Accumulator, Walk, load_library
from probes.registry import PROBES

LIB = load_library(probes=PROBES)
RECORDS = Path(__file__).resolve().parent / "data" / "qdisc-drops-tbf.json"


def real_records() -> list[dict]:
    return json.loads(RECORDS.read_text())


def judged(records: list[dict]) -> dict[str, object]:
    w = Walk(LIB, {"netns": 1}, "packet-loss")
    w.choose("packet-loss/qdisc-drops", params={"device": records[0]["device"]})
    acc = Accumulator("qdisc-drops", LIB.probes["qdisc-drops"].merge)
    acc.add(records)
    return {f.rule: f for f in w.complete("ok", acc.result(4.0), 4.0) if f.group.startswith("qdisc-")}


def changed(**fields) -> list[dict]:
    out = copy.deepcopy(real_records())
    for r in out:
        r.update(copy.deepcopy(fields))
    return out


def test_real_tbf_records_add_up_and_name_shaping():
    records = real_records()
    assert len(records) >= 2 and sum(r["drops"] for r in records) > 50
    acc = Accumulator("qdisc-drops", LIB.probes["qdisc-drops"].merge)
    acc.add(records)
    (entry,) = acc.result(4.0)["entries"]
    assert entry["total_drops"] == sum(r["drops"] for r in records) == entry["total_traced"]
    assert sum(entry["total_reasons"].values()) == entry["total_drops"]
    assert sum(f["count"] for f in entry["total_flows"]) == entry["total_drops"]
    found = judged(records)
    assert list(found) == ["qdisc-shaping-tbf"]
    f = found["qdisc-shaping-tbf"]
    ns = records[0]["netns_name"]
    assert f.advice[0].endswith(f"`ip netns exec {ns} tc qdisc change dev {entry['device']} root handle 5: tbf "
                                f"rate 2000000bit burst 1600 limit 3000`.")
    assert "kernel drop reasons: QDISC_DROP" in "\n".join(f.evidence_lines)


def test_the_conclusion_leads_with_the_qdisc_and_details_get_its_top_flow():
    records = real_records()
    top = records[0]["flows"][0]["flow"]
    w = Walk(LIB, {"netns": 1}, "packet-loss")
    w.choose("packet-loss/qdisc-drops", params={"device": records[0]["device"]})
    acc = Accumulator("qdisc-drops", LIB.probes["qdisc-drops"].merge)
    acc.add(records)
    w.complete("ok", acc.result(4.0), 4.0)
    assert w.conclusion().summary.startswith(f"The shaper of {records[0]['device']} (tbf 5:)")
    details = w.suggestions()[0]
    assert details.ref == "packet-loss/drop-details"
    assert details.params == {"src-ip": top["src_ip"], "dst-ip": top["dst_ip"], "l4-protocol": "udp",
                              "dst-port": top["dst_port"]}  # no interface: the device is in another namespace


def test_fq_codel_dropping_at_dequeue_is_aqm_with_its_target():
    records = changed(kind="fq_codel", tc_target="root handle 5:",
                      options={"limit": 10240, "limit_unit": "packets", "target_us": 5000, "interval_us": 100000},
                      overlimits=0)
    for r in records:  # what 6.1 reports: dropped after enqueue, no specific reason
        r["traced_after_enqueue"], r["traced_at_enqueue"] = r["traced"], 0
        r["reasons"] = {"NOT_SPECIFIED": r["traced"]} if r["traced"] else {}
    found = judged(records)
    assert list(found) == ["qdisc-aqm"]
    assert found["qdisc-aqm"].advice[0].endswith(
        f"tc qdisc change dev {records[0]['device']} root handle 5: fq_codel target 10000us`.")
    # 6.16+ names the AQM's drops itself, whatever the kind.
    assert list(judged(changed(kind="cake", reasons={"QDISC_CONGESTED": 9}, drops=9))) == ["qdisc-aqm"]


def test_requeues_are_backpressure_before_anything_else():
    found = judged(changed(requeues=40))
    assert list(found) == ["qdisc-backpressure"]
    assert any("ethtool -G " in a for a in found["qdisc-backpressure"].advice)


@pytest.mark.parametrize("kind, options, rule, command", [
    ("pfifo", {"limit": 20, "limit_unit": "packets"}, "qdisc-limit",
     "tc qdisc change dev {dev} root handle 5: pfifo limit 40`."),
    ("pfifo_fast", {}, "qdisc-txqueuelen", "ip link set dev {dev} txqueuelen 10000`"),
])
def test_limit_overflow_raises_the_limit_or_txqueuelen(kind, options, rule, command):
    records = changed(kind=kind, options=options, overlimits=0)
    found = judged(records)
    assert list(found) == [rule]
    assert command.format(dev=records[0]["device"]) in found[rule].advice[0]


def test_in_our_own_namespace_commands_have_no_prefix():
    found = judged(changed(netns_name=None, exec_prefix=""))
    assert found["qdisc-shaping-tbf"].advice[0].split("`")[1].startswith("tc qdisc change dev ")


def test_a_qdisc_without_drops_says_so():
    quiet = changed(drops=0, overlimits=0, traced=0, traced_at_enqueue=0, reasons={}, locations={}, flows=[])
    assert list(judged(quiet)) == ["qdisc-no-drops"]


if __name__ == "__main__":  # record the base records again, from a real run (root)
    from probes.qdisc_drops import QdiscDrops
    from tests.netenv import send_udp, veth_ns
    from tests.test_qdisc_drops import add_qdisc

    with veth_ns() as env:
        add_qdisc(env, "root", "handle", "5:", "tbf", "rate", "1mbit", "burst", "1600", "limit", "3000")
        with QdiscDrops(device=env.peer_if, netns=env.ns) as probe:
            got = []
            for sport in (40300, 40301):
                send_udp(env.host_ip, 7100, 150, payload=b"x" * 1000, ns=env.ns, sport=sport)
                probe.wait(0.5)
                got += probe.read()
    RECORDS.write_text(json.dumps(got, indent=1) + "\n")
    print(f"{len(got)} records -> {RECORDS}")
