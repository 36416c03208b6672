"""A real Prometheus server (Debian's `prometheus`) and a real `netsleuth exporter`, for tests.

Prometheus runs on loopback with its own temporary data directory and a short scrape
interval; the exporter is a subprocess started as from a terminal.  Both are stopped
by pid, even when the test fails.  The lab's histogram checks can reuse both: start
the exporter where the probes run, point ``Prometheus(targets=[...])`` at it.
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

from tests.netenv import NETSLEUTH, ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 10) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def wait_until(what: str, check, timeout: float, every: float = 0.3):
    """``check()`` until it returns something truthy; AssertionError naming ``what`` past ``timeout``."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


class Exporter:
    """`netsleuth exporter --listen 127.0.0.1:PORT ARGS...` as a subprocess."""

    def __init__(self, *args: str, wrapper: list[str] = (), env: dict[str, str] | None = None):
        """``wrapper``: a command the exporter runs under (setpriv with fewer capabilities);
        ``env``: its environment (default: ours)."""
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"

        def default_signals():
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)

        self.log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen([*wrapper] + NETSLEUTH + ["exporter", "--listen", self.address, *args], cwd=ROOT,
                                     stdout=self.log, stderr=subprocess.STDOUT, text=True, env=env,
                                     preexec_fn=default_signals)

    def metrics(self) -> str:
        return http_get(f"http://{self.address}/metrics")

    def metrics_once_serving(self) -> str:
        """/metrics, or "" while the exporter does not listen yet."""
        if self.proc.poll() is not None:
            raise AssertionError(f"the exporter exited ({self.proc.returncode}): {self.output()}")
        try:
            return self.metrics()
        except OSError:
            return ""

    def wait_probe(self, probe: str, timeout: float = 120) -> None:
        """Until the probe is up (its BPF compiled and attached)."""
        line = f'netsleuth_probe_up{{probe="{probe}"}} 1.0'
        wait_until(f"{probe} up in the exporter", lambda: line in self.metrics_once_serving().splitlines(), timeout)

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


class Prometheus:
    """``prometheus`` scraping ``targets`` every ``interval`` on a free loopback port."""

    def __init__(self, targets: list[str], interval: str = "1s", rule_files: tuple[str, ...] = ()):
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus is not installed (scripts/setup.sh --test installs Debian's)")
        self.dir = Path(tempfile.mkdtemp(prefix="netsleuth-prom-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
            "rule_files": [str(Path(f).resolve()) for f in rule_files],
            "scrape_configs": [{"job_name": "netsleuth", "static_configs": [{"targets": targets}]}],
        }
        (self.dir / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
        self.log = open(self.dir / "log", "w+")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={self.dir / 'prometheus.yml'}", f"--storage.tsdb.path={self.dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited: {(self.dir / 'log').read_text()}")
            try:
                return http_get(self.url + "/-/ready", timeout=2) and True
            except OSError:
                return False

        wait_until("prometheus ready", ready, 60)

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        params = {"query": expr} | ({"time": f"{at:.3f}"} if at is not None else {})
        body = json.loads(http_get(f"{self.url}/api/v1/query?" + urllib.parse.urlencode(params)))
        assert body["status"] == "success", body
        return body["data"]["result"]

    def value(self, expr: str, at: float | None = None) -> float | None:
        """The single result's value (None when the query returns nothing)."""
        result = self.query(expr, at)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def scraped_buckets(text: str, name: str, labels: dict[str, str] | None = None) -> dict[float, float]:
    """``le`` -> cumulative count of histogram ``name`` in a /metrics text, for the one label
    set that has ``labels`` (le excluded)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[float, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name + "_bucket" and all(s.labels.get(k) == v for k, v in (labels or {}).items()):
                out[float(s.labels["le"])] = s.value
    return out


def bucket_increase(before: dict[float, float], after: dict[float, float]) -> dict[float, float]:
    """What came between two scrapes (a counter only grows while the exporter runs)."""
    return {le: count - before.get(le, 0.0) for le, count in after.items()}


def histogram_quantile(q: float, buckets: dict[float, float]) -> float:
    """Prometheus's histogram_quantile over cumulative ``buckets`` (le -> count): its
    documented algorithm (promql/quantile.go, bucketQuantile, 2.42): the bucket the rank
    q * count falls in, linear interpolation inside it, the lowest bucket starting at 0, a
    rank in +Inf giving the highest finite bound.  tests/test_exporter_histograms.py checks
    it against a real Prometheus."""
    if math.isnan(q):
        return math.nan
    if q < 0 or q > 1:
        return -math.inf if q < 0 else math.inf
    bounds = sorted(buckets)
    if not bounds or not math.isinf(bounds[-1]):
        return math.nan
    counts = []
    for le in bounds:  # ensureMonotonic: a lower count than the previous bucket's is raised to it
        counts.append(max(buckets[le], counts[-1]) if counts else buckets[le])
    if len(bounds) < 2 or counts[-1] == 0:
        return math.nan
    rank = q * counts[-1]
    b = next(i for i in range(len(bounds) - 1) if counts[i] >= rank) if counts[-2] >= rank else len(bounds) - 1
    if b == len(bounds) - 1:
        return bounds[-2]
    if b == 0 and bounds[0] <= 0:
        return bounds[0]
    start, count = (bounds[b - 1], counts[b] - counts[b - 1]) if b > 0 else (0.0, counts[b])
    rank -= counts[b - 1] if b > 0 else 0
    return start + (bounds[b] - start) * (rank / count)
