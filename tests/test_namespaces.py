"""Namespaces named everywhere: a real fault inside a namespace (an nftables rule dropping one
UDP flow, a closed port; ~200 packets/s each), diagnosed from the host.  The findings, the
conclusion and the report name the namespace, and the advised commands, run as written,
print the rule and show that nothing listens."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from playbooks import load_library
from probes.registry import PROBES
from probes.runtime import netns as N
from probes.runtime.params import ParamError
from tests.autopilot_scenario import CLOSED, DROPPED, PASSING, diagnose_cmd, drop_scenario
from tests.netenv import ROOT, our_bpf_programs, sh, veth_ns
from wizard import discovery as D
from wizard.contextvals import validate_context

root = pytest.mark.skipif(os.geteuid() != 0, reason="creates namespaces and loads BPF (needs root)")
LIB = load_library(probes=PROBES)


def commands(text: str) -> list[str]:
    return re.findall(r"`([^`]+)`", text)


@root
@pytest.mark.bpf
def test_autopilot_from_the_host_names_the_namespace_and_its_commands_work(tmp_path):
    with drop_scenario() as sc:
        env = sc.env
        sc.start_traffic(60, per_tick=(10, 10, 2))  # 200 packets/s dropped by the rule, 200/s to the closed port
        proc = subprocess.run(diagnose_cmd(env, tmp_path / "r", tmp_path / "s", "--namespace", env.ns, inside=False),
                              cwd=ROOT, capture_output=True, text=True, timeout=180)
        rep = json.loads((tmp_path / "r" / "report.json").read_text())
        fixes = rep["conclusion"]["fixes"]
        assert proc.returncode == 0, proc.stderr
        # The advised commands, run as written (a shell, as a person pastes them), on the live fault.
        nft = next(c for f in fixes for c in commands(f) if c.endswith("nft list ruleset"))
        listing = subprocess.run(nft, shell=True, capture_output=True, text=True)
        ss_cmd = next(c for f in fixes for c in commands(f) if " ss -lntup " in c)
        ss_closed = subprocess.run(ss_cmd, shell=True, capture_output=True, text=True)
        ss_open = subprocess.run(ss_cmd.replace(f":{CLOSED}", f":{PASSING}"), shell=True, capture_output=True,
                                 text=True)
        delete = next(c for f in fixes for c in commands(f) if " nft delete rule " in c)
        sc.stop()
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert our_bpf_programs() == []

    # Every cause, its advice and the report's tables name the namespace.
    causes = {f["rule"]: f for f in rep["findings"] if f["explains"]}
    assert set(causes) == {"reason-netfilter", "reason-no-socket"}
    for f in causes.values():
        assert f["title"].endswith(f"in namespace {env.ns}"), f["title"]
        assert f["evidence"]["namespace"]["name"] == env.ns
        assert f"interface: {env.peer_if} in namespace {env.ns}" in f["evidence_lines"]
        advised = [c for a in f["advice"] for c in commands(a) if not c.startswith(("dmesg", "ovs-"))]
        assert advised and all(c.startswith(f"ip netns exec {env.ns} ") for c in advised), advised
    assert f"in namespace {env.ns}" in rep["conclusion"]["summary"]
    # The commands are written for the namespace, and they print what the finding says.
    assert nft == f"ip netns exec {env.ns} nft list ruleset"
    assert f"udp dport {DROPPED} drop" in listing.stdout
    assert ss_cmd == f"ip netns exec {env.ns} ss -lntup 'sport = :{CLOSED}'"
    assert len(ss_closed.stdout.strip().splitlines()) == 1 and ss_closed.stdout.startswith("Netid")
    assert f":{PASSING}" in ss_open.stdout  # the same command does show a listener where there is one
    # The fix is known: the rule, its handle, and the exact command that removes it.
    m = re.fullmatch(rf"ip netns exec {env.ns} nft delete rule inet nsltest input handle (\d+)", delete)
    assert m, delete
    assert f"(`udp dport {DROPPED} drop`, handle {m.group(1)})" in " ".join(fixes)
    # ...and for the closed port: nothing listens there (read from the namespace), start it.
    assert any(f.startswith(f"Nothing listens on UDP port {CLOSED} in namespace {env.ns} (read from its /proc/")
               and "start the service that should receive it" in f for f in fixes), fixes
    # The steps ran in the namespace: the Details step carries it with the interface there.
    steps = [t for t in rep["timeline"] if t["kind"] == "step"]
    assert f"--netns {env.ns}" in steps[0]["command"]
    details = [t for t in steps if t["probe"] == "drop-details"]
    assert details and all(t["params"]["netns"] == env.ns and t["params"]["interface"] == env.peer_if
                           and t["status"] == "ok" for t in details)
    # What the user said is the namespace; netsleuth's own namespace inode is a host fact.
    assert rep["context"]["namespace"] == env.ns and "netns" not in rep["context"]
    assert rep["host"]["netns"] == N.current_netns()
    md = (tmp_path / "r" / "report.md").read_text()
    assert f"| {env.peer_if}@{env.ns} |" in md  # the tables' Interface column


@root
def test_pickers_offer_other_namespaces_interfaces_and_connections():
    listener = None
    with veth_ns() as env:
        try:
            listener = subprocess.Popen(["ip", "netns", "exec", env.ns, sys.executable, "-c",
                                         "import socket,time; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                                         "s.bind(('0.0.0.0', 5555)); print('ready', flush=True); time.sleep(60)"],
                                        stdout=subprocess.PIPE, text=True)
            assert listener.stdout.readline().strip() == "ready"
            inv = D.discover(all_namespaces=True)
        finally:
            if listener is not None:
                listener.kill()
                listener.wait()
        choices = dict((v, label) for label, v in D.choices_for(inv, "interface", "interfaces"))
        assert f"{env.peer_if}@{env.ns}" in choices and f"namespace {env.ns}" in choices[f"{env.peer_if}@{env.ns}"]
        assert env.host_if in choices  # ours keep their plain name
        assert (f"{env.ns} (ip netns exec {env.ns})", env.ns) in D.choices_for(inv, "netns")
        flows = [f for f in inv.flows if f.namespace == env.ns]
        assert [(f.protocol, f.local_port, f.process) for f in flows] == [("udp", 5555, os.path.basename(sys.executable)[:15])]
        service = next(f for f in D.flow_filters(inv.flows) if f.fill.get("namespace") == env.ns)
        assert service.fill == {"dst_port": 5555, "l4_protocol": "udp", "namespace": env.ns}
        assert service.label.endswith(f"in namespace {env.ns}")

        # A step form that names the namespace lists its interfaces by name; a probe given
        # name@namespace runs with --interface name --netns namespace.
        assert (choices[f"{env.peer_if}@{env.ns}"], env.peer_if) == D.choices_for(inv, "interface", netns=env.ns)[0]
        from wizard.backends import LiveBackend
        assert LiveBackend().command_line("drop-details", {"interface": f"{env.peer_if}@{env.ns}"}) == \
            f"netsleuth probe drop-details --interface {env.peer_if} --netns {env.ns}"

        # The context takes the picked interface of another namespace: name and namespace apart.
        assert validate_context(LIB, {"device": f"{env.peer_if}@{env.ns}"}) == {"device": env.peer_if,
                                                                                "namespace": env.ns}
        assert validate_context(LIB, {"device": env.peer_if, "namespace": env.ns})["device"] == env.peer_if
        with pytest.raises(ParamError, match="--device"):
            validate_context(LIB, {"device": env.peer_if})  # not in our namespace
        with pytest.raises(ParamError, match="--namespace"):
            validate_context(LIB, {"namespace": "nst-no-such-namespace"})
        # A process's namespace, when it has no name: nsenter.
        sleeper = subprocess.Popen(["ip", "netns", "exec", env.ns, "sleep", "30"])
        try:
            for _ in range(50):
                if os.stat(f"/proc/{sleeper.pid}/ns/net").st_ino != N.current_netns():
                    break
                import time
                time.sleep(0.05)
            ns = N.resolve(str(sleeper.pid))
            assert ns.name == env.ns and ns.enter == f"ip netns exec {env.ns}"
            assert N.Namespace(ns.inode, None, sleeper.pid, "sleep").enter == f"nsenter -t {sleeper.pid} -n"
            assert N.ifindex_in(ns, env.peer_if) == json.loads(sh("ip", "-j", "link", "show", env.peer_if,
                                                                  ns=env.ns).stdout)[0]["ifindex"]
        finally:
            sleeper.kill()
            sleeper.wait()


@root
def test_the_fix_for_a_closed_port_says_what_does_listen_there():
    from playbooks.rules import Finding
    from wizard.fixes import known_fixes

    with veth_ns() as env:
        server = subprocess.Popen(["ip", "netns", "exec", env.ns, sys.executable, "-c",
                                   "import socket,time; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                                   "s.bind(('127.0.0.1', 7777)); print('ready', flush=True); time.sleep(60)"],
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout.readline().strip() == "ready"
            ns = N.resolve(env.ns)

            def closed(port: int, proto: str = "udp") -> Finding:
                return Finding("reason-no-socket", "drop-cause", "critical", "", "", None, [], [],
                               {"namespace": ns.to_dict(), "flow": {"protocol": proto, "src_ip": env.host_ip,
                                                                    "dst_ip": env.peer_ip, "dst_port": port}},
                               True, 0, "drop-summary", None)

            (only_lo,) = known_fixes([closed(7777)])
            assert only_lo.startswith(f"The service on UDP port 7777 in namespace {env.ns} listens on 127.0.0.1 "
                                      f"only, and the packets go to {env.peer_ip}: make it listen on {env.peer_ip}")
            (other,) = known_fixes([closed(7777, "tcp")])
            assert other.startswith(f"Something listens on UDP port 7777 in namespace {env.ns}, but these packets "
                                    "are TCP")
            (none,) = known_fixes([closed(7778)])
            assert none.startswith(f"Nothing listens on UDP port 7778 in namespace {env.ns}")
            check = re.search(r"then `([^`]+)` lists it", none).group(1)
            assert check == f"ip netns exec {env.ns} ss -lnup 'sport = :7778'"
        finally:
            server.kill()
            server.wait()
