#!/usr/bin/env python3
"""What `netsleuth exporter` costs, measured in one run on this machine (run as root).

(a) the exporter with drop-summary, scraped every 15 s by a real Prometheus while a
    namespace drops a steady stream of UDP (64 flows to closed ports): the exporter
    process's own CPU (user + system, after its probes attached) and its RSS;
(b) scrape latency at the series bound: the collector and the text exposition with
    --max-drop-series label sets of netsleuth_drops_total (default 2000, all filled) plus
    a full set of latency histograms, in process (real drops cannot make 2000 label sets
    on one host: they would need 2000 devices);
(c) scrape latency of the real exporter at the bound, for real: N namespaces made
    here each drop one datagram to a closed port on their loopback, so the kernel's
    drop table and netsleuth_drops_total hold N keys / label sets (drop-summary keys by
    location, reason, device and namespace in the exporter: flows never add keys).

    sudo .venv/bin/python bench/exporter_cost.py [--seconds 180] [--write]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import os
import platform
import socket
import statistics
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402

from bench.report import publish  # noqa: E402
from exporter.families import Families  # noqa: E402
from exporter.series import BoundedCounters, DropSeries  # noqa: E402
from tests.netenv import veth_ns  # noqa: E402
from tests.promenv import Exporter, Prometheus  # noqa: E402

STEADY = (  # ~RATE datagrams/s over 64 closed ports, for SECONDS
    "import socket,sys,time\n"
    "s=socket.socket(2,2); rate=float(sys.argv[2]); end=time.monotonic()+float(sys.argv[3]); i=0\n"
    "while time.monotonic()<end:\n"
    "    s.sendto(b'x',(sys.argv[1],20000+i%64)); i+=1\n"
    "    time.sleep(1/rate)\n"
)
CLONE_NEWNET, SIOCSIFFLAGS, LO_UP = 0x40000000, 0x8914, 0x1 | 0x8 | 0x40  # IFF_UP|LOOPBACK|RUNNING


@contextlib.contextmanager
def namespaces(count: int):
    """``count`` namespaces (ip -batch: one process for all), removed on the way out."""
    names = [f"nsb{os.getpid()}-{i}" for i in range(count)]
    try:
        subprocess.run(["ip", "-batch", "-"], input="".join(f"netns add {n}\n" for n in names), text=True,
                       check=True)
        yield names
    finally:
        subprocess.run(["ip", "-force", "-batch", "-"], input="".join(f"netns del {n}\n" for n in names),
                       text=True, capture_output=True)


def drop_one_in_each(names: list[str]) -> None:
    """In each namespace: loopback up, one UDP datagram to its closed port 9 (setns, one process)."""
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        for name in names:
            fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns {name}")
            finally:
                os.close(fd)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sh14x", b"lo", LO_UP))
                s.sendto(b"x", ("127.0.0.1", 9))
    finally:
        libc.setns(home, CLONE_NEWNET)
        os.close(home)


def steady_cost(seconds: float, rate: float) -> dict:
    with veth_ns() as env:
        exp = Exporter("--probes", "drop-summary")
        prom = None
        sender = None
        try:
            exp.wait_probe("drop-summary")
            proc = psutil.Process(exp.proc.pid)
            sender = subprocess.Popen(["ip", "netns", "exec", env.ns, sys.executable, "-c", STEADY, env.peer_ip,
                                       str(rate), str(seconds + 60)])
            prom = Prometheus([exp.address], interval="15s")
            cpu0, t0 = sum(proc.cpu_times()[:2]), time.monotonic()
            rss, shared = [], []
            while time.monotonic() - t0 < seconds:
                mem = proc.memory_info()
                rss.append(mem.rss)
                shared.append(mem.shared)
                time.sleep(1)
            cpu = sum(proc.cpu_times()[:2]) - cpu0
            wall = time.monotonic() - t0
            window = f"{int(wall)}s"
            scrapes = prom.value(f'count_over_time(scrape_duration_seconds{{job="netsleuth"}}[{window}])')
            mean_scrape = prom.value(f'avg_over_time(scrape_duration_seconds{{job="netsleuth"}}[{window}])')
            max_scrape = prom.value(f'max_over_time(scrape_duration_seconds{{job="netsleuth"}}[{window}])')
            netns = os.stat(f"/run/netns/{env.ns}").st_ino
            drops = prom.value(f'sum(netsleuth_drops_total{{netns="{netns}"}})')
            series = prom.value('scrape_samples_scraped{job="netsleuth"}')
        finally:
            if sender:
                sender.kill()
            if prom:
                prom.stop()
            exp.stop()
    return {"cpu_pct": 100 * cpu / wall, "wall": wall, "rss_mb": statistics.median(rss) / 2**20,
            "rss_max_mb": max(rss) / 2**20,
            "shared_mb": statistics.median(shared) / 2**20, "scrapes": scrapes, "mean_scrape_ms": 1000 * mean_scrape,
            "max_scrape_ms": 1000 * max_scrape, "drops": drops, "samples": series}


def bound_latency(limit: int, rounds: int) -> dict:
    """The collector's text for `limit` drop label sets and 8 latency instances x 8 stages."""
    drops = DropSeries(None, limit)
    drops.drops = BoundedCounters(DropSeries.LABELS, limit)
    for i in range(limit):
        drops.drops.add((f"REASON_{i % 40}", f"func_{i % 300}", f"vnet{i}", "4026531833"), 1000 + i)
    slots = {s: 10 * s for s in range(20)}

    class Full:
        def collect(self):
            fams = Families()
            drops.emit(fams)
            for inst in range(8):
                for stage in range(8):
                    fams.log2_histogram("netsleuth_stage_latency_seconds", "d",
                                        {"path": "vm", "direction": "rx", "device": f"vnet{inst}",
                                         "stage": f"S{stage}->S{stage + 1}"}, slots)
            fams.log2_histogram("netsleuth_ovs_upcall_latency_seconds", "d", {}, slots)
            return list(fams)

    registry = CollectorRegistry()
    registry.register(Full())
    times, size = [], 0
    for _ in range(rounds):
        began = time.perf_counter()
        text = generate_latest(registry)
        times.append(time.perf_counter() - began)
        size = len(text)
    lines = sum(1 for line in text.decode().splitlines() if not line.startswith("#"))
    return {"median_ms": 1000 * statistics.median(times), "max_ms": 1000 * max(times), "bytes": size,
            "samples": lines}


def full_table_latency(keys: int, rounds: int) -> dict:
    with namespaces(keys) as names:
        exp = Exporter("--probes", "drop-summary", "--max-drop-series", str(keys + 100))
        try:
            exp.wait_probe("drop-summary")
            drop_one_in_each(names)
            time.sleep(1)
            times = []
            for _ in range(rounds):
                began = time.perf_counter()
                text = urllib.request.urlopen(f"http://{exp.address}/metrics", timeout=60).read().decode()
                times.append(time.perf_counter() - began)
            entries = next(float(line.split()[-1]) for line in text.splitlines()
                           if line.startswith('netsleuth_map_entries{map="drops"'))
            series = sum(1 for line in text.splitlines() if line.startswith("netsleuth_drops_total{"))
        finally:
            exp.stop()
    return {"median_ms": 1000 * statistics.median(times[1:]), "first_ms": 1000 * times[0],
            "max_ms": 1000 * max(times), "keys": entries, "series": series}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=180)
    ap.add_argument("--rate", type=float, default=500, help="steady drops per second in (a)")
    ap.add_argument("--bound", type=int, default=2000)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    load = os.getloadavg()
    a = steady_cost(args.seconds, args.rate)
    b = bound_latency(args.bound, 20)
    c = full_table_latency(args.bound, 6)
    load_after = os.getloadavg()
    table = "\n".join([
        "| measure | value |", "|---|---|",
        f"| (a) exporter CPU, drop-summary scraped every 15 s, {a['wall']:.0f} s | {a['cpu_pct']:.2f} % of one core |",
        f"| (a) exporter RSS (median / max); of it, shared pages (libraries: libbcc with LLVM) | "
        f"{a['rss_mb']:.0f} / {a['rss_max_mb']:.0f} MiB; {a['shared_mb']:.0f} MiB |",
        f"| (a) scrapes; duration mean / max (Prometheus's scrape_duration_seconds) | {a['scrapes']:.0f}; "
        f"{a['mean_scrape_ms']:.0f} / {a['max_scrape_ms']:.0f} ms |",
        f"| (a) drops counted meanwhile; samples per scrape | {a['drops']:.0f}; {a['samples']:.0f} |",
        f"| (b) exposition at the bound: {args.bound} drop series + 65 histograms, median / max of 20 | "
        f"{b['median_ms']:.0f} / {b['max_ms']:.0f} ms ({b['samples']} samples, {b['bytes'] / 1024:.0f} KiB) |",
        f"| (c) real scrape, {c['keys']:.0f} keys in the kernel's drop table and {c['series']} drop series "
        f"(one per namespace), median / max of 5 after the first | "
        f"{c['median_ms']:.0f} / {c['max_ms']:.0f} ms (first: {c['first_ms']:.0f} ms) |",
    ])
    method = (f"`bench/exporter_cost.py` on {platform.node()} ({os.cpu_count()} CPUs, kernel {platform.release()}); "
              f"the machine was shared with other engineers' test runs and a QEMU VM (load average "
              f"{load[0]:.1f} before, {load_after[0]:.1f} after), so the CPU and latency figures are upper bounds "
              f"of what an idle host sees. (a) a sender aiming at {args.rate:.0f} drops/s over 64 flows (the count it "
              f"reached is in the table); the probe's own "
              f"in-kernel cost per drop is in the drop-summary sections above.")
    publish("exporter-cost", "netsleuth exporter: its own CPU, memory and scrape latency (this machine)", method,
            table, "bench/exporter_cost.py", args.write,
            extra="\n(b) is the collector and prometheus_client's text exposition only, with every label set "
                  "filled; (c) is the whole scrape over HTTP, the kernel read included (every key of the drop "
                  "table, walked twice: the records and the map fill count). Its first scrape reads 2000 keys never "
                  "seen and symbolizes each one's stack: about the default --read-timeout (2 s) on this loaded "
                  "host, so such a scrape may serve the previous totals and the next one the new drops "
                  "(netsleuth_probe_read_timeouts_total counts it); later scrapes only symbolize keys that "
                  "changed.\n")


if __name__ == "__main__":
    main()
