"""`netsleuth exporter --listen ADDR:PORT --probes LIST`."""

from __future__ import annotations

import argparse
import sys

from probes.runtime import params as P
from probes.runtime import stop
from probes.runtime.params import ParamError
from probes.runtime.stop import ProbeStopped

from . import specs as S

# Outside 9100-9999 (the exporters' range on Prometheus's port allocation list, full
# since 2023) and no registered or common service's port: docs/exporter.md.
DEFAULT_PORT = 10374
DEFAULT_LISTEN = f":{DEFAULT_PORT}"
EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("exporter", help="serve the tier-1 probes as Prometheus metrics (docs/exporter.md)",
                       description="Run the tier-1 probes for good and serve their counters and histograms "
                                   "on /metrics for Prometheus; / says which probes run and why others do not.")
    p.add_argument("--listen", default=DEFAULT_LISTEN, metavar="ADDR:PORT",
                   help=f"where to serve (default {DEFAULT_LISTEN}: every address; 127.0.0.1:{DEFAULT_PORT} for "
                        "this host only)")
    names = ", ".join(sorted(S.exportable()))
    p.add_argument("--probes", metavar="LIST",
                   help=f"probe instances, {S.SYNTAX} (probes: {names}); default: every one this host can run")
    p.add_argument("--read-timeout", metavar="S", default="2",
                   help="longest a scrape waits for the probes' reads; past it, the previous totals are served "
                        "(default 2)")
    p.add_argument("--max-drop-series", metavar="N", default="2000",
                   help="most label sets of netsleuth_drops_total (and most VMs, and virtqueues, of the VM-path "
                        "series); past it new ones are counted in one 'other' series (default 2000)")


def parse_listen(text: str) -> tuple[str, int]:
    """``ADDR:PORT``, ``:PORT`` (every address) or ``[V6ADDR]:PORT``."""
    host, sep, port = text.rpartition(":")
    if not sep or not port:
        raise ParamError("--listen", text, f"ADDR:PORT, e.g. 127.0.0.1:{DEFAULT_PORT} or :{DEFAULT_PORT}")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return host or "0.0.0.0", P.port("--listen", port)


def _physical_interfaces() -> list[str]:
    from wizard.discovery import PHYSICAL, discover

    return [i.name for i in discover(with_flows=False).by_kind(PHYSICAL) if i.up]


def _usage(message: str) -> int:
    print(f"netsleuth exporter: {message}", file=sys.stderr)
    return EXIT_USAGE


def run(args: argparse.Namespace) -> int:
    stop.install_signal_handlers()  # SIGINT / SIGTERM / SIGHUP: stop serving, detach every probe
    from prometheus_client import CollectorRegistry

    from probes.runtime.kernel import detect

    from .collector import ProbeCollector
    from .runner import ProbeRunner
    from .server import app, serve

    try:
        host, port = parse_listen(args.listen)
        read_timeout = P.seconds("--read-timeout", args.read_timeout, 0.05, 60, 2.0)
        max_series = P.integer("--max-drop-series", args.max_drop_series, 1, 1_000_000, 2000)
        caps = detect()
        specs = S.parse(args.probes, caps) if args.probes is not None else S.default(caps, _physical_interfaces)
    except ParamError as e:
        return _usage(str(e))
    runners = [ProbeRunner(s, max_series) for s in specs]
    registry = CollectorRegistry()
    registry.register(ProbeCollector(runners, read_timeout))
    try:
        server, _thread = serve(host, port, app(registry, runners))
    except OSError as e:
        print(f"netsleuth exporter: cannot listen on {args.listen}: {e.strerror or e}", file=sys.stderr)
        return EXIT_ERROR
    print(f"netsleuth exporter: serving http://{args.listen}/metrics", file=sys.stderr, flush=True)
    try:
        for r in runners:
            r.start()
        while True:
            stop.sleep(3600)
    except (KeyboardInterrupt, ProbeStopped):
        return EXIT_OK
    finally:
        server.shutdown()
        server.server_close()
        for r in runners:
            r.stop()
        for r in runners:  # each closes its probe in its own thread; the loader's atexit is the backstop
            r.join(30)
