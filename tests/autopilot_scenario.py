"""A real packet-loss scenario for the autopilot, in a namespace the test creates.

Host end of a veth pair sends three UDP flows into namespace ``env.ns``:
  port 9999  dropped by an nftables rule in the namespace (NETFILTER_DROP, the dominant flow)
  port 9997  nobody listens (NO_SOCKET)
  port 9998  a real listener receives it (must never show up as dropped)
The autopilot runs inside the namespace, so interface names in the drops are
its own.  `python -m tests.autopilot_scenario [OUT.jsonl.gz]` regenerates the recording
tests/data/recordings/packet-loss-netfilter.jsonl.gz from a real run (as root).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.netenv import ROOT, NETSLEUTH, VethNs, sh, veth_ns

DROPPED, CLOSED, PASSING = 9999, 9997, 9998
SPORT_DROPPED, SPORT_CLOSED, SPORT_PASSING = 41999, 41997, 41998
NFT_RULES = ("table inet nsltest {\n chain input {\n type filter hook input priority 0; policy accept;\n"
             f" udp dport {DROPPED} drop\n }}\n}}\n")
RECORDING = ROOT / "tests" / "data" / "recordings" / "packet-loss-netfilter.jsonl.gz"

# Sends until `seconds` pass or SIGTERM: every 50 ms, 2 packets of the dropped flow, 1 to the
# closed port, 2 passing; prints how many it sent per flow.
_SENDER = """
import signal, socket, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
dst, seconds = sys.argv[1], float(sys.argv[2])
flows = [(int(sport), int(dport), int(n)) for sport, dport, n in (a.split(":") for a in sys.argv[3:])]
socks = []
for sport, dport, n in flows:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # another run of this scenario may send too
    s.bind(("", sport))
    socks.append((s, dport, n))
sent = [0] * len(socks)
end = time.monotonic() + seconds
try:
    while time.monotonic() < end:
        for i, (s, dport, n) in enumerate(socks):
            for _ in range(n):
                s.sendto(b"netsleuth-scenario", (dst, dport))
                sent[i] += 1
        time.sleep(0.05)
finally:
    print(*sent, flush=True)
"""

_LISTENER = f"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", {PASSING})); s.settimeout(3)
print("ready", flush=True)
n = 0
try:
    while True:
        s.recv(100); n += 1
except socket.timeout:
    pass
print(n, flush=True)
"""


@dataclass
class Scenario:
    env: VethNs
    listener: subprocess.Popen
    sender: subprocess.Popen | None = None

    def start_traffic(self, seconds: float, per_tick: tuple[int, int, int] = (2, 1, 2)) -> None:
        """Packets per 50 ms tick of the dropped, closed and passing flows (10 = 200 packets/s)."""
        flows = [f"{sport}:{dport}:{n}" for (sport, dport), n in
                 zip(((SPORT_DROPPED, DROPPED), (SPORT_CLOSED, CLOSED), (SPORT_PASSING, PASSING)), per_tick)]
        self.sender = subprocess.Popen([sys.executable, "-c", _SENDER, self.env.peer_ip, str(seconds), *flows],
                                       stdout=subprocess.PIPE, text=True)

    def stop(self) -> tuple[list[int], int]:
        """(packets sent per flow [dropped, closed, passing], packets the listener received)."""
        sent = [0, 0, 0]
        if self.sender is not None:
            if self.sender.poll() is None:
                self.sender.terminate()
            out = self.sender.communicate(timeout=10)[0].split()
            sent = [int(x) for x in out] if len(out) == 3 else sent
        received = self.listener.communicate(timeout=15)[0].split()
        return sent, int(received[-1]) if received and received[-1].isdigit() else -1


@contextlib.contextmanager
def drop_scenario():
    with veth_ns() as env:
        sh("nft", "-f", "-", ns=env.ns, input=NFT_RULES)
        listener = subprocess.Popen(["ip", "netns", "exec", env.ns, sys.executable, "-c", _LISTENER],
                                    stdout=subprocess.PIPE, text=True)
        sc = Scenario(env, listener)
        try:
            assert listener.stdout.readline().strip() == "ready"
            yield sc
        finally:
            if sc.sender is not None and sc.sender.poll() is None:  # a test that failed midway
                sc.sender.kill()
                sc.sender.communicate()
            if listener.poll() is None:
                listener.kill()
                listener.communicate()


def diagnose_cmd(env: VethNs, report: Path, sessions: Path, *extra: str, inside: bool = True) -> list[str]:
    """`netsleuth diagnose --autopilot` inside the scenario's namespace (or on the host)."""
    return (["ip", "netns", "exec", env.ns] if inside else []) + [*NETSLEUTH, "diagnose", "--symptom", "packet-loss",
            "--dst-ip", env.peer_ip, "--l4-protocol", "udp", "--autopilot", "--duration", "3",
            "--report", str(report), "--sessions", str(sessions), *extra]


def main(out: str) -> int:
    Path(out).unlink(missing_ok=True)  # regenerating: --record never overwrites a file
    with drop_scenario() as sc, tempfile.TemporaryDirectory() as tmp:
        sc.start_traffic(30)
        proc = subprocess.run(diagnose_cmd(sc.env, Path(tmp) / "report", Path(tmp) / "sessions",
                                           "--record", out), cwd=ROOT, capture_output=True, text=True)
        sent, received = sc.stop()
        print(proc.stderr, file=sys.stderr)
        print(f"exit {proc.returncode}; sent {sent}; received {received}", file=sys.stderr)
        return proc.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else str(RECORDING)))
