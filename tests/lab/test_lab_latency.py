"""Latency and OVS probes on a real OVS kernel datapath (guest side: tests/lab/latency_checks.py;
every probe reads each phase separately).

Ground truth per phase, all controlled by the guest:
- cached: LAT_PINGS pings host (sys0) -> uplink namespace and LAT_PINGS pings uplink
  namespace -> fake VM, with every datapath flow in place (the datapath's `missed`
  counter stays put);
- flushed: one ping after each `ovs-appctl revalidator/purge`: two upcalls (request +
  reply), counted by the datapath's `missed`, each answered by a flow install.  (Not
  `ovs-dpctl del-flows`: measured, ovs-vswitchd then keeps answering upcalls without ever
  reinstalling the flows it believes are still there, so every packet upcalls);
- udp_normal / udp_slow: one UDP datagram after each purge, host -> namespace (tx) and
  back (rx); in udp_slow ovs-vswitchd is stopped (SIGSTOP) while the datagram upcalls, for
  40 to 640 ms: its upcall cannot be answered before the resume, a time the test knows.
  Each datagram's one-way time, from just before sendto() to the namespace's kernel
  receive timestamp (tx, SO_TIMESTAMPNS) or to recvmsg() returning on the host (rx),
  encloses the probes' windows; sendto() returns after the upcall;
- udp_burst: BURST datagrams back to back from one unconnected socket right after a
  purge, each way: one identity but for the payload (same ports, IP id 0), in flight
  together across the upcall;
- ovs_prime / interleaved: flow A hits an OpenFlow controller rule (its datapath flow
  sends every packet to ovs-vswitchd; no install follows those upcalls), flow B is new
  100 ms after A's upcall and gets its megaflow installed;
- drop_decision: an OpenFlow drop rule, first packet upcalled, the rest dropped in the
  datapath (test_lab_drops.py checks the drop probes on it).
"""

from __future__ import annotations

import json

import pytest

from probes.ovs_megaflow import band_of
from tests.lab.expect import step_ok

pytestmark = [pytest.mark.lab, pytest.mark.timeout(1800)]

HOST, PEER, VM = "10.251.0.1", "10.251.0.2", "10.251.0.20"
# Time a datagram spends outside a probe's window, uncapped: sendto() before the first
# stage, the receive after the last one.  Measured 0.6-1.2 ms, and 13 ms for a socket's
# first datagram under TCG.  A packet counts as clearly slow beyond this.
OUTSIDE_MARGIN_US = 20_000


def phase(lab: dict, name: str) -> dict:
    step_ok(lab, "latency")
    return lab["latency"][name]


def summary(ph: dict, probe: str) -> dict:
    (rec,) = [r for r in ph["records"][probe] if r["type"].endswith("_summary")]
    return rec


def events(ph: dict, probe: str) -> list[dict]:
    return [r for r in ph["records"][probe] if r["type"].endswith("_event")]


def pair_counts(rec: dict) -> dict[tuple[str, str], int]:
    return {(p["from"], p["to"]): p["count"] for p in rec["pairs"] if not p["total"]}


def pair(rec: dict, a: str, b: str) -> dict:
    (p,) = [p for p in rec["pairs"] if (p["from"], p["to"], p["total"]) == (a, b, False)]
    return p


def total_pair(rec: dict) -> dict:
    (t,) = [p for p in rec["pairs"] if p["total"]]
    return t


def expected_pairs(stages: list[str], skip: set[str]) -> list[tuple[str, str]]:
    path = [s for s in stages if s not in skip]
    return list(zip(path, path[1:]))


def nothing_lost(rec: dict) -> None:
    assert rec["replaced_unfinished"] == 0 and rec["evicted_unfinished"] == 0, rec


def bounds_us(ph: dict) -> list[tuple[float, float]]:
    """[low, high] of each tx datagram's upcall wait.  At most its one-way time.  At least,
    with ovs-vswitchd stopped, the time from sendto() returning (after the upcall) to the
    resume (the answer comes after it); else the one-way time less the sendto() (the way to
    the upcall, measured) and OUTSIDE_MARGIN_US for the rest of the way after the answer
    (the handler's EXECUTE syscall and the namespace's receive: under 1 ms measured)."""
    out = []
    for p in ph["sent"]:
        if "resumed_mono_ns" in p:
            low = (p["resumed_mono_ns"] - p["returned_mono_ns"]) / 1000
        else:
            low = p["one_way_us"] - p["sendto_us"] - OUTSIDE_MARGIN_US
        out.append((low, p["one_way_us"]))
    return out


def assert_samples_within(buckets: list[dict], bounds: list[tuple[float, float]]) -> None:
    """Each datagram's value v lies in its [low, high]; so does the k-th smallest v between
    the k-th smallest lows and highs (pointwise bounds keep order statistics in order).  A
    log2 bucket [b_low, b_high) holds each value: b_low <= k-th high, b_high > k-th low."""
    samples = sorted((b["low"], b["high"]) for b in buckets for _ in range(b["count"]))
    assert len(samples) == len(bounds), (buckets, bounds)
    for (b_low, b_high), low, high in zip(samples, sorted(lo for lo, _ in bounds), sorted(hi for _, hi in bounds)):
        assert b_low <= high and b_high > low, (b_low, b_high, low, high, buckets, bounds)


# cached flows ----------------------------------------------------------------------

@pytest.mark.parametrize("probe,direction", [("sys_tx", "tx"), ("sys_rx", "rx")])
def test_system_latency_counts_every_cached_ping_at_every_stage(lab, probe, direction):
    ph = phase(lab, "cached")
    n = ph["pings"]
    assert ph["replies"] == n and ph["missed"] == 0
    rec = summary(ph, probe)
    assert rec["type"] == "system_latency_summary" and rec["direction"] == direction
    assert rec["packets_started"] == rec["packets_completed"] == n, rec
    # A cached flow never upcalls: every other adjacent stage pair sees each packet once.
    assert pair_counts(rec) == {p: n for p in expected_pairs(rec["stages"], {"OVS_UPCALL"})}, rec
    total = total_pair(rec)
    assert total["count"] == n and total["p50"] > 0
    nothing_lost(rec)


@pytest.mark.parametrize("probe,direction,last", [("vm_rx", "rx", "VNET_XMIT"), ("vm_tx", "tx", "DEV_XMIT")])
def test_vm_latency_counts_pings_between_the_uplink_and_the_vm(lab, probe, direction, last):
    """rx: the echo requests, phy0 -> OVS -> tun_net_xmit; tx: the VM's replies, tun_get_user
    (netif_receive_skb on vnet0) -> OVS -> phy0."""
    ph = phase(lab, "cached")
    n = ph["pings"]
    assert ph["vm_replies"] == n
    rec = summary(ph, probe)
    assert rec["type"] == "vm_latency_summary" and rec["direction"] == direction
    assert rec["stages"][-1] == last
    assert rec["packets_started"] == rec["packets_completed"] == n, rec
    assert pair_counts(rec) == {p: n for p in expected_pairs(rec["stages"], {"OVS_UPCALL"})}, rec
    nothing_lost(rec)


def test_vm_latency_details_tells_each_stage_of_each_packet(lab):
    """Threshold 0: every echo request to the VM is an event, with the device, skb length,
    CPU and thread at each stage.  The IP packet is 84 bytes (56 bytes of ping data); skb->len
    counts the Ethernet header from where OVS pushes it back (netdev_port_receive) on."""
    ph = phase(lab, "cached")
    evs = events(ph, "vm_details_rx")
    assert len(evs) == ph["pings"], evs
    for e in evs:
        assert e["type"] == "vm_latency_event" and e["direction"] == "rx" and e["ip_len"] == 84, e
        names = [s["stage"] for s in e["stages"]]
        assert names == ["PHY_RX", "OVS_RX", "FLOW_EXTRACT", "OVS_PROCESS", "OVS_VPORT_SEND", "VNET_XMIT"], e
        by = {s["stage"]: s for s in e["stages"]}
        assert by["PHY_RX"]["device"] == by["OVS_RX"]["device"] == "phy0" and by["VNET_XMIT"]["device"] == "vnet0"
        assert by["PHY_RX"]["skb_len"] == by["OVS_RX"]["skb_len"] == 84, e
        assert by["FLOW_EXTRACT"]["skb_len"] == by["VNET_XMIT"]["skb_len"] == 84 + 14, e
        assert all(s["ifindex"] and s["cpu"] in (0, 1) and s["tid"] >= 0 and s["comm"] for s in e["stages"]), e
        assert e["total_us"] == pytest.approx(sum(s["delta_us"] for s in e["stages"]), abs=0.1 * len(names))
    # --interval: the Summary's record comes with the events (every 2 s here).
    sums = [r for name in lab["latency"]["phases"] for r in lab["latency"][name]["records"]["vm_details_rx"]
            if r["type"] == "vm_latency_summary"]
    assert sums and all(r["stages"][-1] == "VNET_XMIT" for r in sums), sums


# attach modes -------------------------------------------------------------------------

def counts_of(rec: dict) -> dict:
    """What a Summary counts, apart from how it hooked and the times it measured."""
    return {"started": rec["packets_started"], "completed": rec["packets_completed"],
            "without_start": rec["stage_without_start"], "pairs": pair_counts(rec),
            "total": total_pair(rec)["count"] if rec["packets_completed"] else 0}


@pytest.mark.parametrize("probe", ["sys_tx", "sys_rx"])
def test_trampolines_and_kprobes_count_the_same_packets(lab, probe):
    """The lab kernel (6.1, module BTF) takes a trampoline on every stage function, the OVS
    module's included, but netdev_frame_hook (rx): its argument is a struct sk_buff **, and 6.1's
    verifier reads no pointer to a pointer from a trampoline's context, so that hook falls back
    to a kprobe and says why.  The kprobe twin, attached to the same functions, counts the same
    packets in every phase (issue 18: same records, same counts either way)."""
    step_ok(lab, "latency")
    auto, kprobe = lab["latency"]["attached"][probe], lab["latency"]["attached"][f"{probe}_kprobe"]
    assert "fentry ovs_dp_process_packet" in auto and "kprobe ovs_dp_process_packet" in kprobe, (auto, kprobe)
    for name in lab["latency"]["phases"]:
        ph = lab["latency"][name]
        a, k = summary(ph, probe), summary(ph, f"{probe}_kprobe")
        assert a["attach"] == "auto" and k["attach"] == "kprobe" and set(k["hooks"].values()) == {"kprobe"}, k
        assert k["fentry_refused"] == {}, k
        fell_back = {f for f, by in a["hooks"].items() if by == "kprobe"}
        assert fell_back == set(a["fentry_refused"]) == ({"netdev_frame_hook"} if probe == "sys_rx" else set()), a
        assert all("arg0 type PTR is not a struct" in why for why in a["fentry_refused"].values()), a
        assert counts_of(a) == counts_of(k), (name, counts_of(a), counts_of(k))
    assert summary(lab["latency"]["cached"], probe)["packets_completed"] > 0


# upcalls ------------------------------------------------------------------------------

@pytest.mark.parametrize("probe", ["sys_tx", "sys_rx"])
def test_system_latency_follows_pings_across_the_upcall(lab, probe):
    ph = phase(lab, "flushed")
    n = ph["pings"]
    assert ph["replies"] == n and ph["missed"] == 2 * n
    rec = summary(ph, probe)
    assert rec["packets_completed"] == n, rec
    counts = pair_counts(rec)
    assert counts[("OVS_PROCESS", "OVS_UPCALL")] == counts[("OVS_UPCALL", "OVS_VPORT_SEND")] == n, rec
    nothing_lost(rec)


def test_ovs_upcall_summary_counts_what_the_datapath_missed(lab):
    cached = summary(phase(lab, "cached"), "upcall")
    assert cached["upcalls"] == 0
    ph = phase(lab, "flushed")
    rec = summary(ph, "upcall")
    assert rec["type"] == "ovs_upcall_summary"
    assert rec["upcalls"] == rec["answered"] == ph["missed"] == 2 * ph["pings"], rec
    assert rec["executes_without_upcall"] == 0, rec  # every packet sent back matched its upcall
    h = rec["histogram"]
    assert h["count"] == ph["missed"] and 0 < h["p50"] <= h["p99"] <= h["max"]
    assert rec["handlers"] and all(t["comm"].startswith("handler") for t in rec["handlers"]), rec["handlers"]
    assert sum(t["upcalls"] for t in rec["handlers"]) == rec["answered"]
    assert h["buckets"][-1]["low"] <= rec["max_us"] <= h["buckets"][-1]["high"], rec  # this interval's slowest


def test_ovs_upcall_summary_by_trampolines_counts_what_kprobes_count(lab):
    """Both OVS functions take a trampoline in the lab; the kprobe twin sees the same upcalls
    and answers in every phase, and a histogram of as many samples."""
    step_ok(lab, "latency")
    assert lab["latency"]["attached"]["upcall"] == "fentry ovs_dp_upcall + fentry ovs_flow_key_extract_userspace"
    for name in lab["latency"]["phases"]:
        a, k = summary(lab["latency"][name], "upcall"), summary(lab["latency"][name], "upcall_kprobe")
        assert set(a["hooks"].values()) == {"fentry"} and a["fentry_refused"] == {}, a
        assert set(k["hooks"].values()) == {"kprobe"}, k
        same = ("upcalls", "answered", "executes_without_upcall")
        assert [a[f] for f in same] + [a["histogram"]["count"]] == [k[f] for f in same] + [k["histogram"]["count"]], name
    assert summary(phase(lab, "flushed"), "upcall")["upcalls"] > 0


def test_ovs_upcall_summary_filters_in_the_kernel(lab):
    """--proto udp --src-ip host --dst-ip peer: the host's datagrams to the namespace count,
    the namespace's datagrams back and the pings do not."""
    assert summary(phase(lab, "flushed"), "upcall_udp_tx")["upcalls"] == 0  # ICMP only
    for name in ("udp_normal", "udp_slow"):
        ph = phase(lab, name)
        everything, tx = summary(ph, "upcall"), summary(ph, "upcall_udp_tx")
        assert everything["upcalls"] == everything["answered"] == ph["missed"] == len(ph["sent"]) + len(ph["sent_rx"])
        assert tx["upcalls"] == tx["answered"] == len(ph["sent"]), tx
        assert everything["executes_without_upcall"] == tx["executes_without_upcall"] == 0, (everything, tx)


def test_an_execute_no_upcall_asked_for_is_counted_apart(lab):
    """An OpenFlow packet-out: ovs-vswitchd has the kernel execute a datagram (the namespace
    received it) that never upcalled: no upcall, no answer, one execute without an upcall,
    in both instances (the filtered one: it is the host's UDP to the namespace)."""
    ph = phase(lab, "packet_out")
    assert ph["received"] == "seq=packet-out" and ph["missed"] == 0, ph
    for name in ("upcall", "upcall_udp_tx"):
        rec = summary(ph, name)
        assert (rec["upcalls"], rec["answered"], rec["executes_without_upcall"]) == (0, 0, 1), rec


@pytest.mark.parametrize("name", ["udp_normal", "udp_slow"])
def test_upcall_latency_is_each_datagrams_wait(lab, name):
    """Each datagram's upcall latency lies within its bounds (bounds_us): checked on the
    histogram rank by rank, on the sum (avg x answered) and on the interval's max.  Stopping
    ovs-vswitchd moves all three by the time it was stopped."""
    ph = phase(lab, name)
    if name == "udp_slow":  # ground truth: each datagram waited at least its pause
        assert all(p["one_way_us"] >= p["pause_ms"] * 1000 for p in ph["sent"]), ph["sent"]
    rec = summary(ph, "upcall_udp_tx")
    bounds = bounds_us(ph)
    assert_samples_within(rec["histogram"]["buckets"], bounds)
    total = rec["avg_us"] * rec["answered"]
    lows, highs = [lo for lo, _ in bounds], [hi for _, hi in bounds]
    assert sum(lows) <= total <= sum(highs) + 0.1 * len(bounds), (rec, bounds)
    assert max(lows) <= rec["max_us"] <= max(highs), (rec, bounds)


@pytest.mark.parametrize("name", ["udp_normal", "udp_slow"])
def test_the_ovs_stage_tail_in_the_summary_is_each_datagrams_wait(lab, name):
    """The system Summary's OVS_UPCALL -> OVS_VPORT_SEND pair holds each datagram's upcall
    wait: its histogram follows the one-way times as the upcall probe's does."""
    ph = phase(lab, name)
    rec = summary(ph, "sys_tx")
    assert rec["packets_completed"] == len(ph["sent"]), rec
    assert_samples_within(pair(rec, "OVS_UPCALL", "OVS_VPORT_SEND")["buckets"], bounds_us(ph))
    nothing_lost(rec)


@pytest.mark.parametrize("probe,direction", [("sys_tx", "tx"), ("sys_rx", "rx")])
def test_a_burst_of_one_identity_is_followed_packet_by_packet(lab, probe, direction):
    """BURST datagrams of one unconnected socket, back to back after a purge: same addresses
    and ports, IP id 0 (Linux's choice for DF datagrams of unconnected sockets), several
    waiting for the upcall handler at once.  Each is followed to the last stage by its
    payload: none replaces another, the upcalled ones cross OVS_UPCALL."""
    ph = phase(lab, "udp_burst")[direction]
    sent = ph["sent"]
    assert len(sent) == lab["latency"]["burst"] and {p["ip_id"] for p in sent} == {0}, sent
    assert ph["missed"] == len(sent), ph  # all upcalled, all waiting at once
    rec = summary(phase(lab, "udp_burst"), probe)
    assert rec["packets_started"] == rec["packets_completed"] == len(sent), rec
    nothing_lost(rec)
    counts = pair_counts(rec)
    assert counts[("OVS_PROCESS", "OVS_UPCALL")] == counts[("OVS_UPCALL", "OVS_VPORT_SEND")] == ph["missed"], rec
    assert counts.get(("OVS_PROCESS", "OVS_VPORT_SEND"), 0) == len(sent) - ph["missed"], rec


def test_the_upcall_probe_answers_each_datagram_of_a_burst(lab):
    ph = phase(lab, "udp_burst")
    rec = summary(ph, "upcall")
    missed = ph["tx"]["missed"] + ph["rx"]["missed"]
    assert rec["upcalls"] == rec["answered"] == missed, rec
    assert rec["executes_without_upcall"] == 0, rec


# the latency threshold ---------------------------------------------------------------

@pytest.mark.parametrize("probe,sent_key,first,last", [("sys_details", "sent", "IP_SEND", "DEV_XMIT"),
                                                       ("sys_details_rx", "sent_rx", "PHY_RX", "PROTO_RCV")])
def test_latency_threshold_catches_exactly_the_slow_packets(lab, probe, sent_key, first, last):
    threshold = lab["latency"]["threshold_us"]
    sent = phase(lab, "udp_normal")[sent_key] + phase(lab, "udp_slow")[sent_key]
    names = ("cached", "flushed", "udp_normal", "udp_slow")
    recs = [r for name in names for r in lab["latency"][name]["records"][probe]]
    assert {r["type"] for r in recs} <= {"system_latency_event", "system_latency_summary"}, recs
    evs = [r for r in recs if r["type"] == "system_latency_event"]

    def packet_of(event: dict) -> dict:
        start = event["stages"][0]["ktime_ns"]  # just after the datagram's sendto()
        (pkt,) = [p for p in sent if 0 <= start - p["send_mono_ns"] < 50_000_000]
        return pkt

    caught = {packet_of(e)["seq"]: e for e in evs}
    one_way = {p["seq"]: p["one_way_us"] for p in sent}
    for seq, e in caught.items():
        assert e["total_us"] >= threshold
        assert e["total_us"] <= one_way[seq], (e, one_way[seq])  # inside the send -> receive window
        assert e["stages"][0]["stage"] == first and e["stages"][-1]["stage"] == last, e
    # Where the imposed delay lands: between the upcall and the handler thread sending the
    # packet on (OVS_PACKET_CMD_EXECUTE runs in the handler's own syscall).
    for p in phase(lab, "udp_slow")[sent_key]:
        if p["seq"] in caught and p["one_way_us"] > threshold + OUTSIDE_MARGIN_US:
            e = caught[p["seq"]]
            assert e["slowest_stage"] == "OVS_VPORT_SEND", e
            assert e["slowest_comm"].startswith("handler"), e
            before = [s["stage"] for s in e["stages"]].index("OVS_VPORT_SEND") - 1
            assert e["stages"][before]["stage"] == "OVS_UPCALL", e
    # The one-way time encloses the probe's total, so a packet faster than the threshold
    # cannot be caught; one clearly slower (beyond OUTSIDE_MARGIN_US) must be.
    fast = {p["seq"] for p in sent if p["one_way_us"] < threshold}
    slow = {p["seq"] for p in sent if p["one_way_us"] > threshold + OUTSIDE_MARGIN_US}
    assert slow, f"no packet was slowed past the threshold: {sent}"
    assert not fast & set(caught), sent
    assert slow <= set(caught), sent


# megaflows ----------------------------------------------------------------------------

def test_ovs_megaflow_follows_upcalls_to_installed_flows(lab):
    ph = phase(lab, "flushed")
    evs = ph["records"]["megaflow"]
    upcalls = [e for e in evs if e["type"] == "megaflow_upcall"]
    installs = [e for e in evs if e["type"] == "megaflow_install"]
    assert not [e for e in evs if e["type"] == "error"], evs
    assert len(upcalls) == ph["missed"], upcalls
    assert {(e["flow"]["src_ip"], e["flow"]["dst_ip"]) for e in upcalls} == {(HOST, PEER), (PEER, HOST)}
    timed = [e for e in installs if e.get("install_latency_us", 0) > 0]
    assert len(timed) == ph["missed"], installs
    for e in timed:
        assert {e["key"]["ip_src"], e["key"]["ip_dst"]} == {HOST, PEER} and e["key"]["ip_proto"] == 1, e
        assert e["match"].get("eth_type") == 0x0800 and e["band"] == band_of(e["install_latency_us"]), e
        assert any(a.startswith("output:") for a in e["actions"]), e
        # Answered by the upcall of its own packet: same addresses, the latest one before it.
        mine = [u for u in upcalls if (u["flow"]["src_ip"], u["flow"]["dst_ip"]) == (e["key"]["ip_src"], e["key"]["ip_dst"])
                and u["ktime_ns"] <= e["ktime_ns"]]
        assert e["install_latency_us"] == pytest.approx((e["ktime_ns"] - mine[-1]["ktime_ns"]) / 1000, abs=0.1), e
    summaries = [e for e in evs if e["type"] == "megaflow_summary"]
    assert sum(s["upcalls"] for s in summaries) <= len(upcalls)


def test_an_install_answers_its_own_flow_not_an_older_waiting_upcall(lab):
    """Flow A's packets go up to ovs-vswitchd (controller rule), no install follows them;
    flow B starts 100 ms after A's first upcall and gets a megaflow whose mask leaves out
    the addresses.  B's install latency is measured from B's own upcall, A's upcalls are
    flagged as coming after A's install (the slow path), and kept apart."""
    ph = phase(lab, "interleaved")
    evs = ph["records"]["megaflow"]
    a, b = ph["flow_a"], ph["sent_b"][0]
    ups = [e for e in evs if e["type"] == "megaflow_upcall"]
    a_ups = [e for e in ups if e["flow"]["dst_ip"] == a["dst_ip"]]
    (b_up,) = [e for e in ups if e["flow"]["dst_ip"] == PEER]
    assert len(a_ups) == len(ph["sent_a"]) and all(e["after_install"] for e in a_ups), a_ups
    assert a_ups[0]["ktime_ns"] < b["send_mono_ns"] <= b_up["ktime_ns"]
    (install,) = [e for e in evs if e["type"] == "megaflow_install"]
    # Ground truth for the case: B's megaflow does not match on addresses (NORMAL, with an
    # L2-only OpenFlow rule beside it), so its mask alone would "answer" A's upcall too.
    assert "ip_src" not in install["match"] and "ip_dst" not in install["match"], install
    assert install["key"]["ip_dst"] == PEER and install["upcall_flow"]["ip_dst"] == PEER, install
    assert install["install_latency_us"] == pytest.approx((install["ktime_ns"] - b_up["ktime_ns"]) / 1000, abs=0.1)
    assert install["ktime_ns"] - b["send_mono_ns"] >= install["install_latency_us"] * 1000
    # A's repeated upcalls are the guide's pattern, reported as such (with the summary of the
    # probe's 1 s interval that holds them: it may end after this phase was read).
    later = lab["latency"]["phases"][lab["latency"]["phases"].index("interleaved"):]
    repeats = [r for name in later for r in lab["latency"][name]["records"]["megaflow"]
               if r["type"] == "megaflow_repeated_upcalls"]
    assert repeats and all(r["flow"]["ip_dst"] == a["dst_ip"] for r in repeats), repeats


def test_ovs_megaflow_by_trampolines_sees_what_kprobes_see(lab):
    """Its four OVS functions take a trampoline in the lab; the kprobe twin sees the same upcalls,
    installs and deletes, with the same keys, in every phase."""
    step_ok(lab, "latency")
    attached = lab["latency"]["attached"]
    assert attached["megaflow"] == ("fentry ovs_dp_upcall, ovs_flow_cmd_new, ovs_flow_key_extract_userspace, "
                                    "ovs_flow_cmd_del"), attached
    assert attached["megaflow_kprobe"] == attached["megaflow"].replace("fentry", "kprobe"), attached
    seen = lambda records: sorted((e["type"], json.dumps(e.get("flow") or e.get("key"), sort_keys=True))
                                  for e in records if e["type"] in ("megaflow_upcall", "megaflow_install",
                                                                    "megaflow_delete"))
    for name in lab["latency"]["phases"]:
        records = lab["latency"][name]["records"]
        assert seen(records["megaflow"]) == seen(records["megaflow_kprobe"]), name
    assert any(e["type"] == "megaflow_install" for e in phase(lab, "flushed")["records"]["megaflow"])


def test_ovs_megaflow_filters_in_the_kernel(lab):
    """--eth-dst <the namespace's MAC> --ip-proto udp: the upcalls and installs of the host's
    datagrams to the namespace, not of the datagrams back, not of the pings; the install
    side is filtered on the flow key of the netlink request."""
    assert [e for e in phase(lab, "flushed")["records"]["megaflow_mac"] if e["type"].startswith("megaflow_")
            and e["type"] != "megaflow_summary"] == []
    for name in ("udp_normal", "udp_slow"):
        ph = phase(lab, name)
        evs = ph["records"]["megaflow_mac"]
        ups = [e for e in evs if e["type"] == "megaflow_upcall"]
        installs = [e for e in evs if e["type"] == "megaflow_install"]
        assert len(ups) == len(installs) == len(ph["sent"]), evs
        assert {(e["flow"]["src_ip"], e["flow"]["dst_ip"], e["flow"]["protocol"]) for e in ups} == {(HOST, PEER, "udp")}
        assert {(e["key"]["ip_src"], e["key"]["ip_dst"]) for e in installs} == {(HOST, PEER)}
        assert all(e.get("install_latency_us", 0) > 0 for e in installs), installs
