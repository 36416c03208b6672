"""Frees counted apart (probes.yaml results.apart): out of the entries and the total the
rules judge, into not_a_loss with their pattern and why, for both drop probes' merges."""

from playbooks import Accumulator, load_library
from probes.registry import PROBES

ECHO = {"reason": "NO_SOCKET", "location": "ping_rcv+0xb3", "device": "eth0", "netns": 1,
        "flow": {"protocol": "icmp", "src_ip": "10.0.0.2", "dst_ip": "10.0.0.1", "src_port": None, "dst_port": None}}
UDP = {"reason": "NO_SOCKET", "location": "__udp4_lib_rcv+0x4bc", "device": "eth0", "netns": 1,
       "flow": {"protocol": "udp", "src_ip": "10.0.0.2", "dst_ip": "10.0.0.1", "src_port": 5, "dst_port": 53}}


def test_summary_entries_and_total_leave_the_echo_replies_apart():
    lib = load_library(probes=PROBES)
    acc = Accumulator("drop-summary", lib.probes["drop-summary"].merge)
    acc.add([{"type": "drop_summary", "time": "t", "total": 10, "uncounted_table_full": 0,
              "entries": [{**ECHO, "count": 7}, {**UDP, "count": 3}]}])
    r = acc.result(1.0)
    assert r["total"] == 3 and [e["flow"]["protocol"] for e in r["entries"]] == ["udp"]
    assert r["entries"][0]["share"] == 1.0
    assert r["not_a_loss_total"] == 7
    assert r["not_a_loss"][0]["pattern"] == "echo-reply-no-socket" and "raw-socket" in r["not_a_loss"][0]["why"]


def test_details_events_too_and_an_icmp_drop_of_another_kind_stays():
    lib = load_library(probes=PROBES)
    acc = Accumulator("drop-details", lib.probes["drop-details"].merge)
    other_icmp = {**ECHO, "reason": "ICMP_CSUM", "location": "icmp_rcv+0x10"}
    acc.add([{"type": "drop", "time": "t", **ECHO}] * 4 + [{"type": "drop", "time": "t", **other_icmp}])
    r = acc.result(1.0)
    assert r["total"] == 1 and r["entries"][0]["reason"] == "ICMP_CSUM"
    assert r["not_a_loss_total"] == 4
