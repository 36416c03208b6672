"""qdisc-drops on the real kernel: qdiscs we create in our own namespaces, overflowed by
bursts we send.  Ground truth: the kernel's own counters as `tc -s` prints them, read
before and after."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from playbooks import Accumulator, Walk, load_library
from probes.registry import PROBES
from probes.drop_summary import DropSummary
from probes.qdisc_drops import QDISC_REASONS, QdiscDrops
from tests.netenv import NETSLEUTH, ROOT, ProbeProcess, send_udp, sh, veth_ns

LIB = load_library(probes=PROBES)
OUR_NETNS = os.stat("/proc/self/ns/net").st_ino

pytestmark = [pytest.mark.bpf, pytest.mark.skipif(os.geteuid() != 0, reason="needs root to load BPF")]


def tc_stats(env) -> dict[str, dict]:
    """handle -> the qdisc as `tc -s -j` prints it, for the device inside the namespace."""
    return {q["handle"]: q for q in json.loads(sh("tc", "-s", "-j", "qdisc", "show", "dev", env.peer_if,
                                                  ns=env.ns).stdout)}


def delta(before: dict, after: dict, handle: str, counter: str) -> int:
    return after[handle].get(counter, 0) - before[handle].get(counter, 0)


def burst(env, probe: QdiscDrops, packets: int = 300, port: int = 7100, sport: int = 40100) -> list[dict]:
    """``packets`` UDP datagrams of 1000 bytes from inside the namespace, as fast as Python
    sends, out of the watched device; the probe's records of the time."""
    send_udp(env.host_ip, port, packets, payload=b"x" * 1000, ns=env.ns, sport=sport)
    probe.wait(0.5)  # as the CLI waits between reports: sampling the queue as it drains
    return probe.read()


def by_handle(records: list[dict]) -> dict[str, dict]:
    assert all(r["type"] == "qdisc_drop" for r in records)
    return {r["handle"]: r for r in records}


def merged(probe: str, records: list[dict]) -> dict:
    acc = Accumulator(probe, LIB.probes[probe].merge)
    acc.add(records)
    return acc.result(5.0)


def judged(records: list[dict], env) -> dict[str, object]:
    """The packet-loss walk's findings on these qdisc-drops records: rule id -> finding."""
    w = Walk(LIB, {"netns": OUR_NETNS}, "packet-loss")
    w.choose("packet-loss/qdisc-drops", params={"device": env.peer_if, "netns": env.ns})
    return {f.rule: f for f in w.complete("ok", merged("qdisc-drops", records), 5.0)}


def add_qdisc(env, *spec: str) -> None:
    """``tc qdisc add dev <peer> *spec`` in the namespace; skip where the kernel lacks the kind.
    The namespace sends no IPv6 (router solicitations would share the queue with the burst)."""
    sh("sysctl", "-qw", f"net.ipv6.conf.{env.peer_if}.disable_ipv6=1", ns=env.ns)
    done = sh("tc", "qdisc", "add", "dev", env.peer_if, *spec, ns=env.ns, check=False)
    if done.returncode and "unknown" in done.stderr.lower():
        pytest.skip(f"this kernel has no {spec[-3]} qdisc: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr


def test_tbf_overflow_drops_and_overlimits_match_tc_exactly():
    with veth_ns() as env:
        add_qdisc(env, "root", "handle", "5:", "tbf", "rate", "1mbit", "burst", "1600", "limit", "3000")
        before = tc_stats(env)
        with QdiscDrops(device=env.peer_if, netns=env.ns) as probe, \
                DropSummary(dst_ip=env.host_ip, l4_protocol="udp", dst_port="7100") as summary:
            records = burst(env, probe)
            summary_records = summary.read()
        after = tc_stats(env)
        inode = os.stat(f"/run/netns/{env.ns}").st_ino
        # The packet-loss walk: drop-summary's qdisc finding leads here, device and namespace filled in.
        w = Walk(LIB, {"netns": OUR_NETNS}, "packet-loss")
        w.answer(w.current.default_index)
        findings = w.complete("ok", merged("drop-summary", summary_records), 5.0)
        assert any(f.rule == "reason-qdisc" and f.evidence["device"] == env.peer_if for f in findings)
        step = next(s for s in w.suggestions() if s.ref == "packet-loss/qdisc-drops")
        assert step.params == {"device": env.peer_if, "netns": inode} and step.unavailable is None
        QdiscDrops(**{k.replace("-", "_"): v for k, v in step.params.items()}).close()  # valid as given
        w.choose(step)
        found = {f.rule: f for f in w.complete("ok", merged("qdisc-drops", records), 5.0)}
    drops = delta(before, after, "5:", "drops")
    assert drops > 50, "the burst did not overflow the tbf"
    (tbf,) = records
    assert (tbf["kind"], tbf["handle"], tbf["parent"], tbf["tc_target"]) == ("tbf", "5:", "root", "root handle 5:")
    assert (tbf["device"], tbf["netns"], tbf["netns_name"]) == (env.peer_if, inode, env.ns)
    assert tbf["drops"] == drops
    assert tbf["overlimits"] == delta(before, after, "5:", "overlimits") > 0
    assert tbf["requeues"] == 0
    # Every drop the kernel counted was traced, refused at enqueue, with a qdisc reason.
    assert tbf["traced"] == tbf["traced_at_enqueue"] == drops and tbf["traced_after_enqueue"] == 0
    assert set(tbf["reasons"]) <= set(QDISC_REASONS) and sum(tbf["reasons"].values()) == drops
    assert sum(tbf["locations"].values()) == drops
    assert tbf["flows"] == [{"flow": {"protocol": "udp", "src_ip": env.peer_ip, "dst_ip": env.host_ip,
                                      "src_port": 40100, "dst_port": 7100}, "count": drops}]
    assert tbf["options"] == {"limit": 3000, "limit_unit": "bytes", "rate_bit": 1_000_000, "burst": 1600}
    assert tbf["exec_prefix"] == f"ip netns exec {env.ns} "
    # Shaping: the exact commands for this tbf, in its namespace.
    assert [r for r in found if r.startswith("qdisc-")] == ["qdisc-shaping-tbf"]
    prefix = f"`ip netns exec {env.ns} tc qdisc change dev {env.peer_if} root handle 5: tbf "
    assert found["qdisc-shaping-tbf"].advice[:2] == [
        "If the rate is a mistake, raise it (here: doubled): " + prefix + "rate 2000000bit burst 1600 limit 3000`.",
        "If the rate is right and the traffic bursty, give the queue room (here: doubled): " + prefix
        + "rate 1000000bit burst 1600 limit 6000`."]


@pytest.mark.parametrize("leaf", ["pfifo", "fq_codel"])
def test_small_leaf_under_a_shaper_overflows_and_each_qdisc_counts(leaf):
    """htb shapes to 1 Mbit/s; its class's leaf qdisc holds 20 packets: the burst overflows
    the leaf (fq_codel: and its AQM drops at dequeue).  Both count the drops (htb adds its
    children's); the traced packets are tied to the qdisc the device hands them to: htb."""
    with veth_ns() as env:
        add_qdisc(env, "root", "handle", "1:", "htb", "default", "10")
        sh("tc", "class", "add", "dev", env.peer_if, "parent", "1:", "classid", "1:10", "htb", "rate", "1mbit",
           ns=env.ns)
        add_qdisc(env, "parent", "1:10", "handle", "10:", leaf, "limit", "20")
        before = tc_stats(env)
        with QdiscDrops(device=env.peer_if, netns=env.ns, src_port="40200") as probe:
            records = burst(env, probe, sport=40200)
        after = tc_stats(env)
    got = by_handle(records)
    assert set(got) == {"1:", "10:"}
    root, child = got["1:"], got["10:"]
    assert (root["kind"], root["parent"], child["kind"], child["parent"]) == ("htb", "root", leaf, "1:10")
    assert child["tc_target"] == "parent 1:10 handle 10:"
    assert child["drops"] == delta(before, after, "10:", "drops") > 50
    assert root["drops"] == delta(before, after, "1:", "drops")
    assert root["overlimits"] == delta(before, after, "1:", "overlimits")
    assert root["traced"] == root["drops"]
    assert sum(f["count"] for f in root["flows"]) == root["drops"]
    assert child["options"]["limit"] == 20 and child["options"]["limit_unit"] == "packets"
    if leaf == "pfifo":
        assert root["traced_at_enqueue"] == root["drops"]
    assert child["backlog_max"] > 0 and child["qlen_max"] <= 20
    found = judged(records, env)
    assert "qdisc-shaping-class" in found and found["qdisc-shaping-class"].evidence["handle"] == "1:"
    if leaf == "pfifo":
        assert found["qdisc-limit"].evidence["handle"] == "10:"
        assert found["qdisc-limit"].advice[0].endswith(
            f"`ip netns exec {env.ns} tc qdisc change dev {env.peer_if} parent 1:10 handle 10: pfifo limit 40`.")


def test_flow_filters_narrow_the_traced_packets_not_the_counters():
    with veth_ns() as env:
        add_qdisc(env, "root", "handle", "5:", "tbf", "rate", "1mbit", "burst", "1600", "limit", "3000")
        before = tc_stats(env)
        with QdiscDrops(device=env.peer_if, netns=env.ns, dst_port="7601") as one, \
                QdiscDrops(device=env.peer_if, netns=env.ns, l4_protocol="udp", src_port="40602") as other:
            send_udp(env.host_ip, 7601, 150, payload=b"x" * 1000, ns=env.ns, sport=40601)
            send_udp(env.host_ip, 7602, 150, payload=b"x" * 1000, ns=env.ns, sport=40602)
            one.wait(0.3)
            (a,), (b,) = one.read(), other.read()
        after = tc_stats(env)
    drops = delta(before, after, "5:", "drops")
    assert a["drops"] == b["drops"] == drops > 100
    assert a["traced"] > 0 and b["traced"] > 0 and a["traced"] + b["traced"] == drops
    assert [f["flow"]["dst_port"] for f in a["flows"]] == [7601] and a["flows"][0]["count"] == a["traced"]
    assert [f["flow"]["src_port"] for f in b["flows"]] == [40602] and b["flows"][0]["count"] == b["traced"]


def test_a_device_without_drops_reports_none():
    with veth_ns() as env:
        add_qdisc(env, "root", "handle", "7:", "tbf", "rate", "100mbit", "burst", "100kb", "limit", "1mb")
        before = tc_stats(env)
        with QdiscDrops(device=env.peer_if, netns=env.ns) as probe:
            records = burst(env, probe, packets=20)
        after = tc_stats(env)
    assert delta(before, after, "7:", "drops") == 0
    (tbf,) = records
    assert tbf["kind"] == "tbf" and tbf["drops"] == 0 and tbf["traced"] == 0
    assert tbf["reasons"] == {} and tbf["flows"] == []
    assert [r for r in judged(records, env) if r.startswith("qdisc-")] == ["qdisc-no-drops"]


def test_the_children_of_mq_are_told_apart_by_their_parent():
    with veth_ns() as env:
        name = f"{env.peer_if[:-1]}m"
        sh("ip", "link", "add", name, "numtxqueues", "4", "type", "veth", "peer", "name", name + "p", ns=env.ns)
        sh("ip", "link", "set", name, "up", ns=env.ns)
        sh("tc", "qdisc", "add", "dev", name, "root", "handle", "1:", "mq", ns=env.ns)
        with QdiscDrops(device=name, netns=env.ns) as probe:
            probe.wait(0.2)
            records = probe.read()
    queues = [(r["kind"], r["handle"], r["parent"]) for r in records]
    assert queues[0] == ("mq", "1:", "root")
    # the children are of net.core.default_qdisc's kind (pfifo_fast, or fq_codel where systemd sets it)
    assert sorted(q[1:] for q in queues[1:]) == [("0:", f"1:{i}") for i in range(1, 5)]
    assert all(r["drops"] == 0 for r in records)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(NETSLEUTH + ["probe", "qdisc-drops", *args, "--duration", "1"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_bad_device_or_namespace_is_one_line_and_exit_2():
    with veth_ns() as env:
        cases = {
            ("--device", "nsqnosuch0"): "--device",
            ("--device", env.peer_if): "--netns",  # it lives in the namespace, not here
            ("--device", env.host_if, "--netns", env.ns): f"namespace {env.ns}",  # it lives here, not there
            ("--device", "lo", "--netns", "nst-nosuch"): "ip netns",
            ("--device", "lo", "--netns", "12345"): "ip netns",
            ("--netns", env.ns): "--device is required",
        }
        for args, words in cases.items():
            done = run_cli(*args)
            lines = done.stderr.strip().splitlines()
            assert done.returncode == 2 and len(lines) == 1, (args, done.stderr)
            assert words in lines[0] and "Traceback" not in done.stderr, (args, lines[0])


# A sender inside the namespace overflowing the tbf for a while; a listener on the host end
# takes what gets through, so the qdisc's are the only drops.
_SENDER = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("", 40400))
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    for _ in range(40):
        s.sendto(b"x" * 1000, (sys.argv[1], 7400))
    time.sleep(0.2)
"""
_LISTENER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((sys.argv[1], 7400)); s.settimeout(60)
print("ready", flush=True)
while True:
    s.recv(2000)
"""


def test_autopilot_goes_from_the_qdisc_drop_to_the_qdisc_and_its_fix(tmp_path):
    """`netsleuth diagnose --autopilot` in our own namespace: drop-summary finds QDISC_DROP on a
    device of another namespace; the next step, qdisc-drops, finds it there by itself."""
    with veth_ns() as env:
        add_qdisc(env, "root", "handle", "5:", "tbf", "rate", "1mbit", "burst", "1600", "limit", "3000")
        listener = subprocess.Popen([sys.executable, "-c", _LISTENER, env.host_ip], stdout=subprocess.PIPE, text=True)
        sender = None
        try:
            assert listener.stdout.readline().strip() == "ready"
            sender = subprocess.Popen(["ip", "netns", "exec", env.ns, sys.executable, "-c", _SENDER, env.host_ip, "90"])
            proc = subprocess.run(NETSLEUTH + ["diagnose", "--symptom", "packet-loss", "--dst-ip", env.host_ip,
                                               "--l4-protocol", "udp", "--autopilot", "--duration", "3",
                                               "--max-steps", "2", "--report", str(tmp_path / "report"),
                                               "--sessions", str(tmp_path / "sessions")],
                                  cwd=ROOT, capture_output=True, text=True, timeout=240)
        finally:
            for p in (sender, listener):
                if p is not None:
                    p.kill()
                    p.wait()
    assert "Traceback" not in proc.stderr, proc.stderr
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    steps = [t for t in report["timeline"] if t["kind"] == "step"]  # then the steps left open
    assert [s["probe"] for s in steps[:2]] == ["drop-summary", "qdisc-drops"], proc.stderr
    assert steps[1]["status"] == "ok" and steps[1]["suggested_by"] == "reason-qdisc"
    assert steps[1]["params"]["device"] == env.peer_if
    rules = {f["rule"]: f for f in report["findings"]}
    assert "qdisc-shaping-tbf" in rules, sorted(rules)
    assert report["conclusion"]["summary"].startswith(f"The shaper of {env.peer_if} (tbf 5:)")
    assert rules["qdisc-shaping-tbf"]["advice"][0].endswith(
        f"`ip netns exec {env.ns} tc qdisc change dev {env.peer_if} root handle 5: tbf "
        "rate 2000000bit burst 1600 limit 3000`.")


def test_cli_reports_and_detaches_on_ctrl_c():
    with veth_ns() as env:
        add_qdisc(env, "root", "handle", "5:", "tbf", "rate", "1mbit", "burst", "1600", "limit", "3000")
        before = tc_stats(env)
        probe = ProbeProcess("qdisc-drops", "--device", env.peer_if, "--netns", env.ns, "--interval", "60", "--json")
        send_udp(env.host_ip, 7500, 200, payload=b"x" * 1000, ns=env.ns)
        time.sleep(0.5)
        records = probe.stop(signal.SIGINT)
        after = tc_stats(env)
    assert probe.returncode == 0 and "Traceback" not in probe.stderr
    # The interval was cut short by Ctrl-C: what it had counted is reported before detaching.
    (tbf,) = records
    assert tbf["drops"] == tbf["traced"] == delta(before, after, "5:", "drops") > 50
