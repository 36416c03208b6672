"""Host discovery on real devices the test creates: veth into a namespace, a bridge
with a tap, a tun device, a real (paused) QEMU holding a tap, named threads, sockets."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid

import psutil
import pytest

from tests.netenv import sh, veth_ns
from wizard import discovery as D

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="creates network devices (needs root)")


def _tag() -> str:
    return uuid.uuid4().hex[:5]


@contextlib.contextmanager
def bridge_with_tap():
    tag = _tag()
    br, tap, tun = f"nsbr{tag}", f"nstap{tag}", f"nstun{tag}"
    try:
        sh("ip", "link", "add", br, "type", "bridge")
        sh("ip", "tuntap", "add", "dev", tap, "mode", "tap")
        sh("ip", "tuntap", "add", "dev", tun, "mode", "tun")
        sh("ip", "link", "set", tap, "master", br)
        sh("ip", "link", "set", br, "up")
        yield br, tap, tun
    finally:
        for dev in (tap, tun, br):
            sh("ip", "link", "del", dev, check=False)


def test_veth_into_namespace_seen_from_both_sides():
    with veth_ns() as env:
        inv = D.discover(with_flows=False)
        host = inv.interface(env.host_if)
        assert host is not None
        assert host.kind == D.VETH
        assert host.peer == f"{env.peer_if}@{env.ns}"
        assert f"{env.host_ip}/24" in host.addresses
        assert host.up
        assert host.label().startswith(f"{env.host_if} (veth; {env.host_ip}/24")

        inside = D.discover(netns=env.ns)
        peer = inside.interface(env.peer_if)
        assert peer is not None and peer.kind == D.VETH
        assert f"{env.peer_ip}/24" in peer.addresses
        assert inside.interface("lo").kind == D.LOOPBACK
        # The host end does not exist inside the namespace.
        assert inside.interface(env.host_if) is None


def test_bridge_tap_and_tun_kinds():
    with bridge_with_tap() as (br, tap, tun):
        inv = D.discover(with_flows=False)
        assert inv.interface(br).kind == D.BRIDGE
        t = inv.interface(tap)
        assert t.kind == D.TAP and t.master == br and not t.up
        assert "in " + br in t.label() and "down" in t.label()
        assert inv.interface(tun).kind == D.TUN
        assert inv.interface("lo").kind == D.LOOPBACK
        assert [i.name for i in inv.by_kind(D.BRIDGE)].count(br) == 1


def test_classify_covers_ovs_and_physical():
    assert D.classify({"ifname": "br-int", "linkinfo": {"info_kind": "openvswitch"}}, False) == D.OVS_INTERNAL
    assert D.classify({"ifname": "ovs-system", "linkinfo": {"info_kind": "openvswitch"}}, False) == D.OVS_DATAPATH
    assert D.classify({"ifname": "ens11"}, True) == D.PHYSICAL
    assert D.classify({"ifname": "x", "linkinfo": {"info_kind": "vxlan"}}, False) == "virtual (vxlan)"


@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu not installed")
def test_qemu_vm_and_its_vnet():
    """A real QEMU (paused at reset, no guest code runs) with a tap: VM <-> vnet."""
    tag = _tag()
    vnet, name = f"nsvnet{tag}", f"nsvm{tag}"
    proc = subprocess.Popen(
        ["qemu-system-x86_64", "-name", f"guest={name},debug-threads=on", "-S", "-display", "none",
         "-nodefaults", "-M", "q35", "-accel", "tcg", "-m", "32",
         "-netdev", f"tap,id=n0,ifname={vnet},script=no,downscript=no", "-device", "virtio-net-pci,netdev=n0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while not os.path.exists(f"/sys/class/net/{vnet}"):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "qemu did not create its tap"
            time.sleep(0.1)
        # The fd it holds names the device even without `ifname=` on its command line (libvirt passes fds).
        assert vnet in D.tap_devices_of(proc.pid)
        inv = D.discover(with_flows=False)
        vm = next(v for v in inv.vms if v.pid == proc.pid)
        assert vm.name == name and vm.interfaces == (vnet,) and vm.manager == "qemu"
        iface = inv.interface(vnet)
        assert iface.kind == D.TAP and iface.vm == name
        assert f"VM {name}" in iface.label()
    finally:
        proc.kill()
        proc.wait()


def test_qemu_vm_name_forms():
    assert D.qemu_vm_name(["qemu", "-name", "guest=web1,debug-threads=on"]) == "web1"
    assert D.qemu_vm_name(["qemu", "-name", "db2"]) == "db2"
    assert D.qemu_vm_name(["qemu", "-m", "1G"]) is None


THREADS_SCRIPT = r"""
import ctypes, sys, threading, time
libc = ctypes.CDLL(None)
def named(name):
    libc.prctl(15, name.encode(), 0, 0, 0)  # PR_SET_NAME on this thread
    time.sleep(60)
for n in ("handler12", "handler13", "revalidator4", "urcu2"):
    threading.Thread(target=named, args=(n,), daemon=True).start()
time.sleep(0.3)
print("ready", flush=True)
time.sleep(60)
"""


def test_process_threads_roles():
    """Threads named like ovs-vswitchd's (handler/revalidator/urcu) get their roles and TIDs."""
    proc = subprocess.Popen([sys.executable, "-c", THREADS_SCRIPT], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        threads = D.process_threads(proc.pid)
        roles = {t.name: t.role for t in threads}
        assert roles["handler12"] == roles["handler13"] == "handler"
        assert roles["revalidator4"] == "revalidator"
        assert roles["urcu2"] == "urcu"
        assert all(os.path.exists(f"/proc/{proc.pid}/task/{t.tid}") for t in threads)
        ovs = D.Ovs({}, {}, proc.pid, tuple(threads))
        assert len(ovs.tids("handler")) == 2 and len(ovs.tids("revalidator")) == 1
    finally:
        proc.kill()
        proc.wait()


# Recorded `ovs-vsctl --format=json --columns=... list TABLE` output (OVS cannot run on
# this host: no openvswitch module); the parser is what is under test.
RECORDED_OVSDB = {
    "Port": '{"data":[[["uuid","p1"],"br-int"],[["uuid","p2"],"vnet0"],[["uuid","p3"],"ens11"]],'
            '"headings":["_uuid","name"]}',
    "Bridge": '{"data":[["br-int",["set",[["uuid","p1"],["uuid","p2"]]]],["br-ex",["uuid","p3"]]],'
              '"headings":["name","ports"]}',
    "Interface": '{"data":[["br-int","internal"],["vnet0",""],["ens11",""]],"headings":["name","type"]}',
}


def test_ovsdb_json_parsing():
    bridges, types = D.ovs_topology(lambda table, cols: D.parse_ovs_json(RECORDED_OVSDB[table]))
    assert bridges == {"br-int": ("br-int", "vnet0"), "br-ex": ("ens11",)}
    assert types["br-int"] == "internal" and types["vnet0"] == ""
    rows = D.parse_ovs_json('{"data":[["x",["map",[["vm-uuid","abc"]]]]],"headings":["name","external_ids"]}')
    assert rows == [{"name": "x", "external_ids": {"vm-uuid": "abc"}}]


def test_flows_include_an_established_connection():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    client = socket.create_connection(server.getsockname())
    peer, _ = server.accept()
    try:
        port = server.getsockname()[1]
        flows = D.find_flows(limit=10000)
        mine = [f for f in flows if f.pid == os.getpid() and f.remote_port == port]
        assert len(mine) == 1
        f = mine[0]
        assert f.protocol == "tcp" and f.state == "ESTABLISHED" and f.remote_ip == "127.0.0.1"
        assert f.local_port == client.getsockname()[1]
        assert f"-> 127.0.0.1:{port} ESTABLISHED" in f.label()
        # Established flows come before listeners.
        assert flows.index(f) < min((flows.index(x) for x in flows if x.state == "LISTEN"), default=len(flows))
    finally:
        for s in (client, peer, server):
            s.close()


def test_choices_for_pickers_order_and_values():
    """What the forms offer: the kinds a context field asks for come first; OVS threads as TID lists."""
    ifaces = [D.Interface("lo", 1, D.LOOPBACK, True), D.Interface("vnet3", 7, D.TAP, True, vm="web1"),
              D.Interface("ens11", 2, D.PHYSICAL, True), D.Interface("br-int", 5, D.OVS_INTERNAL, True)]
    threads = (D.VswitchdThread(101, "handler12", "handler"), D.VswitchdThread(102, "handler13", "handler"),
               D.VswitchdThread(103, "revalidator4", "revalidator"), D.VswitchdThread(104, "urcu2", "urcu"))
    inv = D.Inventory("h", "k", ifaces, [D.VM("web1", 4242, ("vnet3",), "qemu")],
                      D.Ovs({"br-int": ("br-int", "vnet3")}, {}, 999, threads), [])
    assert [v for _, v in D.choices_for(inv, "interface", "physical-interfaces")][:2] == ["ens11", "br-int"]
    assert [v for _, v in D.choices_for(inv, "interface", "vm-interfaces")][0] == "vnet3"
    assert [v for _, v in D.choices_for(inv, "interface")][-1] == "lo"  # loopback last
    labels = dict((v, label) for label, v in D.choices_for(inv, "interface"))
    assert labels["vnet3"] == "vnet3 (tap; VM web1)"
    assert D.choices_for(inv, "pid", "process:ovs-vswitchd") == [("ovs-vswitchd (pid 999)", "999")]
    assert D.choices_for(inv, "pid", "process:qemu") == [("VM web1 (qemu pid 4242)", "4242")]
    tids = D.choices_for(inv, "tids")
    assert tids[0] == ("all ovs-vswitchd handler threads (2)", "101,102")
    assert ("all ovs-vswitchd revalidator threads (1)", "103") in tids and all("urcu" not in t for t, _ in tids)
    assert D.choices_for(None, "interface") == [] and D.choices_for(inv, "ipv4") == []


def test_flow_filters_fill_the_service_side_never_the_ephemeral_port():
    """A listener on 0.0.0.0 is 'packets to this service' (any address, its port as destination);
    a connection is offered both ways; a client's ephemeral port is never filled."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("0.0.0.0", 0))
    server.listen()
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    peer, _ = server.accept()
    try:
        ephemeral = client.getsockname()[1]
        mine = [f for f in D.find_flows(limit=10000) if f.pid == os.getpid() and port in (f.local_port, f.remote_port)]
        assert len(mine) == 3  # the listener, the client's end, the server's end
        filters = D.flow_filters(mine)
        fills = {f.label: f.fill for f in filters}
        assert fills[f"TCP to the service on 0.0.0.0:{port} [{psutil.Process().name()}]"] == \
            {"dst_port": port, "l4_protocol": "tcp"}
        requests = [f for label, f in fills.items() if label.endswith("(requests)")]
        replies = [f for label, f in fills.items() if label.endswith("(replies)")]
        # both ends of the connection say the same: requests go to the service port, replies come from it
        assert requests and all(f == {"src_ip": "127.0.0.1", "dst_ip": "127.0.0.1", "dst_port": port,
                                      "l4_protocol": "tcp"} for f in requests)
        assert replies and all(f == {"src_ip": "127.0.0.1", "dst_ip": "127.0.0.1", "src_port": port,
                                     "l4_protocol": "tcp"} for f in replies)
        assert all(ephemeral not in f.fill.values() for f in filters)
    finally:
        for s in (client, peer, server):
            s.close()


def test_flow_filters_for_a_client_of_a_remote_service():
    flows = [D.Flow("tcp", "10.0.0.5", 51234, "10.0.0.9", 443, "ESTABLISHED", 77, "curl"),
             D.Flow("udp", "10.0.0.5", 53, None, None, "", 12, "dnsmasq")]
    fills = {f.label: f.fill for f in D.flow_filters(flows)}
    assert fills == {
        "TCP 10.0.0.5 -> 10.0.0.9:443 [curl] (requests)": {"src_ip": "10.0.0.5", "dst_ip": "10.0.0.9",
                                                           "dst_port": 443, "l4_protocol": "tcp"},
        "TCP 10.0.0.9:443 -> 10.0.0.5 [curl] (replies)": {"src_ip": "10.0.0.9", "dst_ip": "10.0.0.5",
                                                          "src_port": 443, "l4_protocol": "tcp"},
        "UDP to the service on 10.0.0.5:53 [dnsmasq]": {"dst_ip": "10.0.0.5", "dst_port": 53, "l4_protocol": "udp"},
    }
