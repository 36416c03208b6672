"""HTTP: /metrics (prometheus_client's WSGI app: content negotiation, gzip) and / (which
probes run, and why the others do not)."""

from __future__ import annotations

import html
import threading
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

from .runner import ProbeRunner


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a stuck client never holds the exit


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args) -> None:  # one line per scrape would flood the journal
        pass


def status_page(runners: list[ProbeRunner]) -> str:
    rows = []
    for r in runners:
        with r.lock:
            rows.append("<tr><td>{}</td><td>{}</td><td>{}</td></tr>".format(
                html.escape(r.id), html.escape(r.state), html.escape(r.attach if r.state == "up" else r.reason)))
    return ("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>netsleuth exporter</title></head><body>"
            "<h1>netsleuth exporter</h1><p><a href=\"/metrics\">/metrics</a></p>"
            "<table border=\"1\"><tr><th>probe</th><th>state</th><th>attached to / why not</th></tr>"
            + "".join(rows) + "</table></body></html>\n")


def app(registry: CollectorRegistry, runners: list[ProbeRunner]):
    metrics = make_wsgi_app(registry)

    def route(environ, start_response):
        path = environ.get("PATH_INFO", "/")
        if path == "/metrics":
            return metrics(environ, start_response)
        if path == "/":
            start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
            return [status_page(runners).encode()]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: see / and /metrics\n"]

    return route


def serve(host: str, port: int, wsgi_app) -> tuple[_Server, threading.Thread]:
    """Listen now (an address in use raises OSError here), serve in a thread."""
    server = make_server(host, port, wsgi_app, server_class=_Server, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    thread.start()
    return server, thread
