"""A probe in its own process that reports on demand (runs INSIDE the lab guest).

The latency checks compare phases (flows cached, flushed, vswitchd slowed) with
one probe attachment each, so they need "what since the last phase" rather than
the CLI's fixed intervals; and each probe compiles in its own process so that
several compile at once (BCC's compiler is not safe to run in threads).

    w = ProbeWorker("ovs-upcall-summary", proto="icmp")   # returns at once; compiles
    w.ready()                                             # attached (or raises)
    records = w.read()                                    # since the last read
    records = w.stop()                                    # the rest; detached

Child: ``python3 -m tests.lab.probe_worker NAME JSON_FLAGS``; stdin lines
"read" / "stop", one JSON list per command on stdout.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time


class ProbeWorker:
    def __init__(self, name: str, **flags: str):
        self.name = name
        self.started = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.lab.probe_worker", name, json.dumps(flags)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.attach_s: float | None = None
        self.attached: str | None = None

    def ready(self, timeout: float = 240) -> "ProbeWorker":
        if self.attached is None:
            line = self._line(timeout)
            if not line.startswith("{"):
                raise RuntimeError(f"{self.name} did not attach: {line}{self._stderr()}")
            self.attached = json.loads(line)["attached"]
            self.attach_s = round(time.monotonic() - self.started, 1)
        return self

    def read(self, timeout: float = 60) -> list[dict]:
        return self._command("read", timeout)

    def stop(self, timeout: float = 60) -> list[dict]:
        try:
            return self._command("stop", timeout)
        finally:
            try:
                self.proc.wait(timeout)
            finally:
                if self.proc.poll() is None:
                    self.proc.kill()

    def close(self) -> None:
        """Detach and end the worker if it still runs (after a failed step)."""
        if self.proc.poll() is None:
            try:
                self.stop(timeout=60)
            except (RuntimeError, OSError, ValueError):
                self.proc.kill()
                self.proc.wait()

    def _command(self, cmd: str, timeout: float) -> list[dict]:
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        line = self._line(timeout)
        if not line.startswith("["):
            raise RuntimeError(f"{self.name}: unexpected answer to {cmd}: {line}{self._stderr()}")
        return json.loads(line)

    def _line(self, timeout: float) -> str:
        box: list[str] = []
        t = threading.Thread(target=lambda: box.append(self.proc.stdout.readline()), daemon=True)
        t.start()
        t.join(timeout)
        if not box:
            self.proc.kill()
            raise RuntimeError(f"{self.name}: no answer within {timeout} s{self._stderr()}")
        return box[0]

    def _stderr(self) -> str:
        if self.proc.poll() is None:
            return ""
        return "\n" + self.proc.stderr.read()[-3000:]


def _child(name: str, flags: dict) -> int:
    from probes.registry import PROBES

    probe = PROBES[name](**flags)
    probe.start()
    records: list[dict] = []
    lock = threading.Lock()
    done = threading.Event()

    def poll() -> None:  # event probes: drain their perf buffer continuously
        while not done.is_set():
            probe.wait(0.2)
            got = probe.read()
            with lock:
                records.extend(got)

    poller = threading.Thread(target=poll, daemon=True) if probe.streaming else None
    if poller:
        poller.start()
    print(json.dumps({"attached": probe.describe_attach()}), flush=True)
    try:
        for line in sys.stdin:
            cmd = line.strip()
            if cmd == "stop" and poller:
                done.set()
                poller.join()
            with lock:
                out = records[:] if poller else probe.read()
                records.clear()
            print(json.dumps(out), flush=True)
            if cmd == "stop":
                break
    finally:
        probe.close()
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1], json.loads(sys.argv[2])))
