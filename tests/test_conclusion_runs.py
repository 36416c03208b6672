"""The conclusion does not mix runs: counts of runs of different lengths are said as rates,
tied counts keep one order whatever order the kernel reported them in, and a drop's
"process" is said for what it is."""

from __future__ import annotations

from playbooks import load_library
from probes.registry import PROBES
from tests.test_playbooks_engine import drop_summary, entry, flow, merged, walk_to_summary

LIB = load_library(probes=PROBES)
NF = entry(600, "nft_do_chain+0x46f", "NETFILTER_DROP", fl=flow(dport=9999))
CLOSED = entry(600, "__udp4_lib_rcv+0x4bc", "NO_SOCKET", fl=flow(dport=9997))


def test_tied_counts_give_the_same_headline_whatever_the_order_they_came_in():
    heads = set()
    for entries in ([NF, CLOSED], [CLOSED, NF]):
        w = walk_to_summary({"dst_ip": "10.0.0.2"})
        w.complete("ok", merged("drop-summary", [drop_summary(*entries)], 30), 30)
        c = w.conclusion()
        heads.add((c.summary, tuple(f.title for f in c.causes)))
    assert len(heads) == 1


def test_a_20_s_details_run_and_a_30_s_summary_run_compare_as_rates():
    w = walk_to_summary({"dst_ip": "10.0.0.2"})
    # The same 200 packets/s each: 6,000 in the Summary's 30 s...
    w.complete("ok", merged("drop-summary", [drop_summary(entry(6000, "nft_do_chain+0x46f", "NETFILTER_DROP",
                                                                fl=flow(dport=9999)),
                                                          entry(6000, "__udp4_lib_rcv+0x4bc", "NO_SOCKET",
                                                                fl=flow(dport=9997)))], 30), 30)
    details = next(s for s in w.suggestions() if s.probe == "drop-details" and s.params["dst-port"] == 9999)
    w.choose(details)
    # ...and 4,000 in the Details' 20 s, one event per packet.
    events = [{"type": "drop", "time": f"2026-12-03T09:00:{i % 60:02d}+00:00", "location": "nft_do_chain+0x46f",
               "reason": "NETFILTER_DROP", "device": "eth0", "netns": 4026531840, "flow": flow(dport=9999),
               "cpu": 1, "comm": "python3", "pid": 7} for i in range(4000)]
    w.complete("ok", merged("drop-details", events, 20), 20)
    causes = {f.rule: f for f in w.conclusion().causes}
    nf, closed = causes["reason-netfilter"], causes["reason-no-socket"]
    assert "(200.0/s)" in nf.say and "(200.0/s)" in closed.say  # not 4,000 beside 6,000
    assert any(line.startswith("4,000 dropped packets captured in 20 s (200.0/s;") for line in nf.evidence_lines)
    assert any(line.startswith("6,000 packets dropped in 30 s (200.0/s;") for line in closed.evidence_lines)
    # The process of a drop is the task the softirq interrupted, said so.
    (proc,) = [line for line in nf.evidence_lines if "python3" in line]
    assert "while the CPU ran process python3" in proc and "often the sender, not the receiver" in proc
