"""`netsleuth probe NAME ...` and `netsleuth doctor`: plain CLIs, no UI."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from .base import Probe, Unavailable
from .registry import PROBES
from .runtime.loader import ProbeError
from .runtime import stop
from .runtime.stop import ProbeStopped
from .runtime.params import ParamError

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3


def _text(text: str) -> str:
    """Words for argparse, which reads % as a format ("busy %" would break --help)."""
    return text.replace("%", "%%")


def add_probe_parsers(sub: argparse._SubParsersAction) -> None:
    probe = sub.add_parser("probe", help="run one probe directly (for experts and scripts)")
    names = probe.add_subparsers(dest="probe_name", metavar="PROBE")
    names.required = True
    for name, cls in sorted(PROBES.items()):
        p = names.add_parser(name, help=_text(cls.description),
                             description=_text(f"{cls.title} (tier {cls.tier}). {cls.description}"))
        for f in cls.flags:
            opts = ["--" + f.name] + (["-" + f.short] if f.short else [])
            if f.kind == "bool":
                p.add_argument(*opts, dest=f.dest, action="store_true", help=_text(f.help))
            elif f.kind == "tids":  # repeatable, each a comma list: --tid 12 --tid 13,14
                p.add_argument(*opts, dest=f.dest, action="append", default=None, help=_text(f.help), metavar="TID[,TID...]")
            else:
                # Strings only: validation (with a message naming the flag) is the probe's.
                extra = f" (default {f.default})" if f.default not in (None, "") else ""
                p.add_argument(*opts, dest=f.dest, default=None, help=_text(f.help + extra),
                               metavar=f.kind.upper() if not f.choices else "{" + ",".join(f.choices) + "}")
        p.add_argument("--json", action="store_true", help="one JSON object per report/event on stdout")


def run_probe(args: argparse.Namespace) -> int:
    stop.install_signal_handlers()
    cls = PROBES[args.probe_name]
    raw = {f.dest: getattr(args, f.dest) for f in cls.flags}
    try:
        probe = cls(**raw)
    except ParamError as e:
        print(f"netsleuth probe {cls.name}: {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        with probe:
            return _loop(probe, args.json)
    except Unavailable as e:
        print(f"netsleuth: cannot run here: {e}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except ProbeError as e:
        print(f"netsleuth: {e}", file=sys.stderr)
        return EXIT_ERROR
    except (KeyboardInterrupt, ProbeStopped):
        return EXIT_OK
    except BrokenPipeError:
        # The reader went away (`... | head`): stop quietly, detached (the with block
        # closed the probe), and keep Python from complaining when it flushes stdout.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def _emit(probe: Probe, records: list[dict], as_json: bool) -> None:
    for r in records:
        if as_json:
            print(json.dumps(r), flush=True)
        else:
            print(probe.format_text(r), flush=True)


def _loop(probe: Probe, as_json: bool) -> int:
    interval = probe.options.values.get("interval") or 0.2
    duration = probe.options.values.get("duration")
    # On stderr even with --json: scripts wait for this line to know the probe is attached.
    print(f"Tracing ({probe.describe_attach()})... Ctrl-C to stop.", file=sys.stderr, flush=True)
    deadline = time.monotonic() + duration if duration else None
    next_report = time.monotonic() + interval
    try:
        while True:
            now = time.monotonic()
            stop_at = min(next_report, deadline) if deadline else next_report
            probe.wait(max(0.0, stop_at - now))
            now = time.monotonic()
            ending = bool(deadline and now >= deadline)
            if ending:
                probe.finish()  # e.g. vhost Details: the interval so far as a summary
            if probe.streaming or now >= next_report or ending:
                _emit(probe, probe.read(), as_json)
                next_report = now + interval
            if ending:
                return EXIT_OK
    except (KeyboardInterrupt, ProbeStopped):
        # Report what was collected since the last interval before detaching.
        probe.finish()
        _emit(probe, probe.read(), as_json)
        return EXIT_OK
