"""The session report: Markdown, JSON and HTML, written atomically with mode 0600.

``build_report`` turns a walk into one JSON-ready dict (host facts, the path
taken with parameters, durations and commands, each probe's key results,
findings with evidence, the conclusion, suggested fixes, the next steps);
the renderers only format that dict: Markdown is the layout, HTML is that Markdown
rendered (markdown-it) with its charts drawn as inline SVG.
"""

from __future__ import annotations

import html
import json
import os
import platform
import re
import socket
import tempfile
from pathlib import Path
from typing import Any, Callable

from markdown_it import MarkdownIt

from playbooks.engine import StepView, Walk
from playbooks.model import Library, ProbeSpec, Question

from .durable import fsync_dir
from .units import short_us
from .replay import generic_command, same_filters
from .steprun import now_iso

REPORT_VERSION = 1
TOP_ROWS = 10
# How a conclusion starts, by its state (playbooks.engine.Conclusion.state).
CONCLUSION_HEADS = {"cause": "Cause found.", "open": "No cause found yet.", "nothing-ran": "No result."}
CommandFor = Callable[[str, dict], str]
SUDO = "sudo "  # the probes need root: a reproduce line is pasted as it is


def as_root(command: str) -> str:
    return command if command.startswith(SUDO) else SUDO + command


# host facts ---------------------------------------------------------------------------

def host_facts(caps=None) -> dict:
    """What the report says about the machine: name, OS, kernel, what the kernel offers."""
    facts: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "os": _os_name(),
        "python": platform.python_version(),
        "netsleuth": _version(),
        "user_is_root": os.geteuid() == 0,
    }
    if caps is not None:
        facts.update({
            "btf": caps.btf, "tracefs": bool(caps.tracefs), "kprobes": caps.kprobes, "uprobes": caps.uprobes,
            "drop_reasons": len(caps.drop_reasons), "privileged": caps.privileged, "lockdown": caps.lockdown,
        })
    return facts


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.system()


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("netsleuth")
    except Exception:
        return "unknown"


# building -------------------------------------------------------------------------------

def _key_results(spec: ProbeSpec, result: dict | None) -> dict | None:
    """The part of a merged result worth showing: counters, the entry table, histograms."""
    if not result:
        return None
    counters = {k: result.get(k) for k in ("records", "duration_s", "total") + spec.merge.totals if k in result}
    if result.get("other_records"):
        counters["other_records"] = result["other_records"]
    if result.get("not_a_loss_total"):  # frees counted apart (probes.yaml results.apart)
        counters["not_a_loss"] = {a["pattern"]: a["count"] for a in result.get("not_a_loss") or []}
    entries = result.get("entries") or []
    rows = []
    for e in entries[:TOP_ROWS]:
        scope = {"evidence": e, "result": result, "context": {}, "step": {}, "let": {}}
        rows.append([t.render(scope, missing="") for _, t in spec.columns])
    out: dict[str, Any] = {"counters": counters, "columns": [c for c, _ in spec.columns], "rows": rows,
                           "entries_total": len(entries)}
    if spec.merge.kind == "sum-histograms":
        out["histograms"] = [{
            "title": hist_title(e, spec.merge.key) or spec.title,
            "unit": e.get("unit", "us"), "buckets": e.get("buckets", []), "count": e.get("count"),
            "p50": e.get("p50"), "p99": e.get("p99"), "p99_9": e.get("p99_9"), "max": e.get("max"),
        } for e in entries[:TOP_ROWS]]
    # Every shown entry's stack: each drop site has its own path through the kernel.
    stacks = [{"rank": i, "what": " | ".join(str(v) for v in row if v), "stack": e["stack"]}
              for i, (e, row) in enumerate(zip(entries[:TOP_ROWS], rows), 1) if e.get("stack")]
    if stacks:
        out["stacks"] = stacks
    if (result.get("chart") or {}).get("points"):
        out["chart"] = result["chart"]
    return out


SPARKS = "▁▂▃▄▅▆▇█"


def chart_text(c: dict) -> str:
    """One line for a chart: its points as a sparkline (the last 120), peak and marked count."""
    values = [p[1] for p in c["points"]]
    top = max(values) or 1
    spark = "".join(SPARKS[min(len(SPARKS) - 1, int(v / top * (len(SPARKS) - 1) + 0.5))] for v in values[-120:])
    marked = sum(1 for p in c["points"] if p[2])
    older = f" (and {c['points_dropped']} older points)" if c.get("points_dropped") else ""
    return (f"{c['title']}: {len(values)} points{older}, peak {max(values):g}"
            + (f", {marked} marked ({c['mark']})" if c.get("mark") else "") + f": {spark}")


def hist_title(entry: dict, key: tuple[str, ...]) -> str:
    """What a histogram is of: "rx OVS_RX → OVS_PROCESS" from its key's text fields."""
    words = [str(entry[k]) for k in key if isinstance(entry.get(k), str) and k not in ("from", "to")]
    if isinstance(entry.get("from"), str) and isinstance(entry.get("to"), str):
        words.append(f"{entry['from']} → {entry['to']}")
    return " ".join(words)


def _step_view_dict(v: StepView, command_for: CommandFor) -> dict:
    return {"step": v.ref, "title": v.title, "probe": v.probe, "tier": v.tier, "cost": v.cost,
            "params": v.params, "duration_s": v.duration, "unavailable": v.unavailable,
            "suggested_by": v.suggested_by, "level": v.level, "command": command_for(v.probe, v.params)}


def _internal(lib: Library, name: str) -> bool:
    cf = lib.context.get(name)
    return cf is not None and cf.kind == "internal"


def build_report(walk: Walk, host: dict, session_id: str | None = None, command_for: CommandFor | None = None,
                 mode: str = "interactive", known_fixes: Callable[[list], list[str]] | None = None) -> dict:
    """``known_fixes(causes)``: fixes read from the live host (wizard.fixes), put before the advice."""
    lib: Library = walk.lib
    command_for = command_for or generic_command
    timeline = []
    for frame in walk.frames:
        node = lib.node(frame.ref)
        if isinstance(node, Question):
            nxt = walk.frames[walk.frames.index(frame) + 1] if frame is not walk.frames[-1] else None
            answer = next((a.say for a in node.answers if nxt and a.goto == nxt.ref), None)
            timeline.append({"kind": "question", "step": frame.ref, "title": node.ask, "answer": answer})
            continue
        spec = lib.probes[node.probe]
        r = frame.result
        params = r.params if r else frame.params
        timeline.append({
            "kind": "step", "step": frame.ref, "title": node.title, "probe": node.probe, "tier": spec.tier,
            "cost": spec.cost, "params": params, "suggested_by": frame.suggested_by,
            # a replay serves a recorded run: when its filters are not the form's, both are said
            "asked_params": frame.params if r and not same_filters(frame.params, r.params) else None,
            "status": r.status if r else "not run", "error": r.error if r else None,
            "started": r.started if r else None, "duration_s": r.duration_s if r else None,
            "attached": r.attached if r else None,
            "command": (r.command if r and r.command else command_for(node.probe, params)),
            "key_results": _key_results(spec, r.result if r else None),
            "findings": [f.title for f in frame.findings],
        })
    c = walk.conclusion()
    return {
        "netsleuth_report": REPORT_VERSION,
        "session": session_id,
        "created": now_iso(),
        "mode": mode,
        "symptom": {"id": walk.symptom, "title": lib.playbooks[walk.symptom].title if walk.symptom in lib.playbooks
                    else walk.symptom},
        # What the user said; what netsleuth set itself (the namespace it runs in) is a host fact.
        "context": {k: v for k, v in walk.context.items() if not _internal(lib, k)},
        "host": {**host, **{k: v for k, v in walk.context.items() if _internal(lib, k)}},
        "timeline": timeline,
        "findings": [f.to_dict() for f in c.findings],
        "conclusion": {"cause_found": c.cause_found, "state": c.state, "summary": c.summary,
                       "causes": [f.title for f in c.causes],
                       "fixes": [*(known_fixes(c.causes) if known_fixes else []), *c.fixes],
                       "chain_title": c.chain_title, "chain": c.chain, "not_measured": c.not_measured},
        "next_steps": [_step_view_dict(v, command_for) for v in c.open_steps],
    }


# writing --------------------------------------------------------------------------------

def write_atomic(path: str | Path, text: str) -> Path:
    """Write via a temporary file in the same directory and rename: readers see the old file
    or the new one, never half of one.  Mode 0600: reports name hosts, addresses and processes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)  # the rename itself survives a crash
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def write_reports(report: dict, directory: str | Path, stem: str = "report") -> dict[str, str]:
    """report.md, report.json and report.html in the directory; returns their paths."""
    d = Path(directory)
    paths = {
        "markdown": write_atomic(d / f"{stem}.md", render_markdown(report)),
        "json": write_atomic(d / f"{stem}.json", json.dumps(report, indent=2, default=str) + "\n"),
        "html": write_atomic(d / f"{stem}.html", render_html(report)),
    }
    return {k: str(v) for k, v in paths.items()}


# Markdown -------------------------------------------------------------------------------

def _params_text(params: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "(none)"


def _md_cell(v: Any) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def render_markdown(rep: dict, figures: dict[str, str] | None = None) -> str:
    """The report as Markdown: the one layout (render_html renders it).  Each chart is a text
    block whose info string names it; ``figures`` (if given) gets its SVG under that name."""
    figures = {} if figures is None else figures
    c = rep["conclusion"]
    out = [f"# netsleuth report: {rep['symptom']['title']}", ""]
    out += [f"*Session {rep['session'] or '-'}, {rep['created']}, {rep['mode']}.*", ""]
    out += ["## Conclusion", "", f"**{CONCLUSION_HEADS[c['state']]}** {c['summary']}", ""]
    if c["chain"]:
        out += [f"### {c['chain_title']}", ""] + [f"{'→ ' if i else ''}{link}  " for i, link in enumerate(c["chain"])] + [""]
    if c["fixes"]:
        out += ["### Suggested fixes", ""] + [f"- {f}" for f in c["fixes"]] + [""]
    if c.get("not_measured"):
        out += ["### Not measured on this host", ""] + [f"- {x}" for x in c["not_measured"]] + [""]
    out += ["## Host", ""] + [f"- **{k}**: {v}" for k, v in rep["host"].items()] + [""]
    if rep["context"]:
        out += ["## What you told netsleuth", ""] + [f"- **{k}**: {v}" for k, v in rep["context"].items()] + [""]
    out += ["## Timeline", ""]
    n = 0
    for t in rep["timeline"]:
        if t["kind"] == "question":
            out += [f"- *{t['title']}* → {t['answer'] or '(not answered)'}"]
            continue
        n += 1
        out += ["", f"### {n}. {t['title']} (`{t['probe']}`, tier {t['tier']})", ""]
        dur = f", {t['duration_s']:.1f} s" if isinstance(t["duration_s"], (int, float)) else ""
        out += [f"- status: **{t['status']}**{dur}" + (f" — {t['error']}" if t["error"] else "")]
        if t["started"]:
            out += [f"- started: {t['started']}"]
        if t.get("attached"):  # reports written before it was kept have no such key
            out += [f"- attached: {t['attached']}"]
        out += [f"- parameters: {_params_text(t['params'])}"]
        if t.get("asked_params") is not None:
            out += [f"- asked for: {_params_text(t['asked_params'])} (a replay shows the run as recorded)"]
        out += [f"- reproduce: `{as_root(t['command'])}`"]
        kr = t["key_results"]
        if kr:
            out += [f"- counters: {_params_text(kr['counters'])}"]
            if kr["rows"]:
                out += ["", "| " + " | ".join(kr["columns"]) + " |", "|" + "---|" * len(kr["columns"])]
                out += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in kr["rows"]]
            for i, h in enumerate(kr.get("histograms", []), 1):
                out += ["", f"{h['title']}: {h['count']} samples, P50 ≤ {h['p50']}, P99 ≤ {h['p99']}, "
                            f"P99.9 ≤ {h['p99_9']}, max ≤ {h['max']} {h['unit']}"]
                out += _figure(figures, f"histogram-{n}-{i}", histogram_text(h), histogram_svg(h))
            if kr.get("chart"):
                out += _figure(figures, f"chart-{n}", chart_text(kr["chart"]), chart_svg(kr["chart"]))
            for st in kr.get("stacks", []):
                out += ["", f"Stack of entry {st['rank']} ({st['what']}):", "", "```"] + st["stack"] + ["```"]
        if t["findings"]:
            out += ["", "Findings: " + "; ".join(t["findings"])]
    out += ["", "## Findings", ""]
    if not rep["findings"]:
        out += ["None."]
    for f in rep["findings"]:
        out += [f"### [{f['level']}] {f['title']}", "", f["say"], ""]
        if f.get("seen_in"):
            out += [f"Seen by: {', '.join(f['seen_in'])}", ""]
        if f["evidence_lines"]:
            out += ["Evidence:", ""] + [f"- {e}" for e in f["evidence_lines"]] + [""]
        if f["cause"]:
            out += [f"Likely cause: {f['cause']}", ""]
        if f["advice"]:
            out += ["Advice:", ""] + [f"- {a}" for a in f["advice"]] + [""]
    if rep["next_steps"]:
        out += ["## Next steps", ""]
        for s in rep["next_steps"]:
            state = f" — not possible here: {s['unavailable']}" if s["unavailable"] else ""
            out += [f"- **{s['title']}** (`{s['probe']}`, tier {s['tier']}, cost: {s['cost']}){state}",
                    f"  - because: {s['suggested_by']}", f"  - parameters: {_params_text(s['params'])}",
                    f"  - command: `{as_root(s['command'])}`"]
    return "\n".join(out) + "\n"


def _figure(figures: dict[str, str], name: str, text: str, svg: str) -> list[str]:
    figures[name] = svg
    return ["", f"```text {name}", text, "```"]


# HTML: the Markdown rendered (markdown-it), its charts as SVG -------------------------------

def _bucket_label(low: int, high: int | None, unit: str) -> str:
    def short(v: int) -> str:
        return short_us(v) if unit == "us" else f"{v:g}"
    return f"{short(low)}–{short(high)}" if high else short(low)


def histogram_text(h: dict, width: int = 40) -> str:
    """The log2 buckets as text bars, as BCC's histograms print them."""
    buckets = [b for b in h.get("buckets", []) if b.get("count")]
    if not buckets:
        return "(no samples)"
    peak = max(b["count"] for b in buckets)
    labels = [_bucket_label(b.get("low", 0), b.get("high"), h.get("unit", "us")) for b in buckets]
    pad = max(map(len, labels))
    return "\n".join(f"{label:>{pad}} |{'█' * max(1, round(width * b['count'] / peak)):<{width}}| {b['count']}"
                     for label, b in zip(labels, buckets))


def histogram_svg(h: dict, width: int = 640, bar_h: int = 16) -> str:
    """A horizontal bar chart of log2 buckets, as the BCC text histograms look, in SVG."""
    buckets = [b for b in h.get("buckets", []) if b.get("count")]
    if not buckets:
        return "<p>(no samples)</p>"
    peak = max(b["count"] for b in buckets)
    label_w, count_w = 130, 70
    plot_w = width - label_w - count_w
    height = bar_h * len(buckets) + 24
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="hist" width="{width}" height="{height}" '
             f'role="img" aria-label="{html.escape(h["title"])}">',
             f'<text x="0" y="12" class="ht">{html.escape(h["title"])} ({h["count"]} samples)</text>']
    for i, b in enumerate(buckets):
        y = 20 + i * bar_h
        w = max(1, round(plot_w * b["count"] / peak))
        label = _bucket_label(b.get("low", 0), b.get("high"), h.get("unit", "us"))
        parts.append(f'<text x="{label_w - 6}" y="{y + bar_h - 4}" text-anchor="end">{html.escape(label)}</text>'
                     f'<rect x="{label_w}" y="{y + 2}" width="{w}" height="{bar_h - 4}" class="bar"/>'
                     f'<text x="{label_w + w + 4}" y="{y + bar_h - 4}">{b["count"]}</text>')
    parts.append("</svg>")
    return "".join(parts)


def chart_svg(c: dict, width: int = 640, height: int = 120) -> str:
    """A column per point (marked ones apart, e.g. cpu-burst's seconds above the threshold),
    the time since the first point under the axis."""
    points = c["points"]
    top = max(p[1] for p in points) or 1
    left, bottom, plot_h = 40, 16, height - 36
    col_w = (width - left) / len(points)
    marked = sum(1 for p in points if p[2])
    title = f"{c['title']} ({len(points)} points" + (f", {marked} marked: {c['mark']}" if c.get("mark") else "") + ")"
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
             f'role="img" aria-label="{html.escape(title)}">',
             f'<text x="0" y="12" class="ht">{html.escape(title)}</text>',
             f'<text x="{left - 4}" y="24" text-anchor="end">{top:g}</text>',
             f'<text x="{left - 4}" y="{height - bottom}" text-anchor="end">0</text>']
    for i, (_, v, mark) in enumerate(points):
        h = max(1.0, plot_h * v / top) if v > 0 else 0.0
        parts.append(f'<rect x="{left + i * col_w:.1f}" y="{height - bottom - h:.1f}" width="{max(1.0, col_w - 1):.1f}" '
                     f'height="{h:.1f}" class="{"mark" if mark else "bar"}"/>')
    t0, t1 = points[0][0], points[-1][0]
    if isinstance(t0, (int, float)) and isinstance(t1, (int, float)):
        parts.append(f'<text x="{left}" y="{height - 2}">0 s</text>'
                     f'<text x="{width}" y="{height - 2}" text-anchor="end">{t1 - t0:.0f} s</text>')
    parts.append("</svg>")
    return "".join(parts)


_CSS = """
body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
h1{font-size:1.5rem}h2{border-bottom:1px solid #ccc;padding-bottom:.2rem}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ccc;padding:.2rem .5rem;text-align:left}
code,pre{background:#f4f4f4;padding:.1rem .3rem}pre{padding:.5rem;overflow-x:auto}
.critical{color:#b00020}.warning{color:#a15c00}.notice{color:#005a9c}.info{color:#444}
.conclusion{background:#f0f6ff;border-left:4px solid #3b7ddd;padding:.5rem 1rem}
svg.hist text,svg.chart text{font-size:11px;font-family:monospace}svg .ht{font-weight:bold}svg .bar{fill:#3b7ddd}
svg .mark{fill:#b00020}
"""


LEVEL_HEADING = re.compile(r"\[(critical|warning|notice|info)\] ")  # a finding's "### [level] title"


def _markdown_it(figures: dict[str, str]) -> MarkdownIt:
    """CommonMark with tables, raw HTML off (every value is escaped); a named chart block
    becomes its SVG, a finding's heading gets its level's class, the conclusion its box."""
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    default_fence = md.renderer.rules["fence"]  # a bound method
    in_box = []

    def fence(renderer, tokens, idx, options, env):
        name = tokens[idx].info.split()[1:2]
        return figures[name[0]] if name and name[0] in figures else default_fence(tokens, idx, options, env)

    def heading_open(renderer, tokens, idx, options, env):
        token, title = tokens[idx], tokens[idx + 1].content
        before = ""
        if token.tag == "h2" and in_box:
            before = "</div>\n" * in_box.pop()
        level = LEVEL_HEADING.match(title)
        if token.tag == "h3" and level:
            token.attrSet("class", level.group(1))
        return before + renderer.renderToken(tokens, idx, options, env)

    def heading_close(renderer, tokens, idx, options, env):
        html_ = renderer.renderToken(tokens, idx, options, env)
        if tokens[idx].tag == "h2" and tokens[idx - 1].content == "Conclusion":
            in_box.append(1)
            html_ += '<div class="conclusion">\n'
        return html_

    md.add_render_rule("fence", fence)
    md.add_render_rule("heading_open", heading_open)
    md.add_render_rule("heading_close", heading_close)
    return md


def render_html(rep: dict) -> str:
    """The Markdown report as a page: the same text, the charts drawn."""
    figures: dict[str, str] = {}
    body = _markdown_it(figures).render(render_markdown(rep, figures))
    title = html.escape(f"netsleuth report: {rep['symptom']['title']}")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n<title>{title}</title>'
            f"<style>{_CSS}</style></head><body>\n{body}</body></html>\n")
