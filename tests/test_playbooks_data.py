"""The playbook files themselves: they load, agree with the real probes, and a bad one is
rejected with an error naming the file and the key (the data cannot rot silently)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from playbooks import PlaybookError, Walk, load_library
from playbooks.expr import Template, Where, compile_condition, compile_let
from playbooks.loader import DATA_DIR
from playbooks.model import Question, resolve_params
from probes.registry import PROBES

LIB = load_library(probes=PROBES)
FULL_CONTEXT = {"src_ip": "10.0.0.1", "dst_ip": "10.0.0.2", "l4_protocol": "tcp", "src_port": 40000,
                "dst_port": 443, "device": "eth0", "reported_loss": 10, "phy_interface": "ens11",
                "vm_interface": "vnet3", "direction": "rx", "latency_threshold_us": 1000, "timeout_ms": 200,
                "ovs_pid": 4200, "vm_pid": 4300, "netns": 1}


def test_every_file_is_loaded():
    assert sorted(LIB.files) == sorted(p.name for p in DATA_DIR.glob("*.yaml"))
    assert set(LIB.playbooks) == {"packet-loss", "high-latency", "ovs-slow", "vm-network"}


@pytest.mark.parametrize("name", sorted(PROBES))
def test_an_implemented_probe_is_described_once(name):
    """Its class says who it is; probes.yaml adds only the playbooks' own (run time, results, views)."""
    raw = yaml.safe_load((DATA_DIR / "probes.yaml").read_text())["probes"][name]
    assert not {"title", "tier", "cost", "description", "flags"} & set(raw), f"probes.yaml re-describes {name}"
    spec, cls = LIB.probes[name], PROBES[name]
    assert (spec.title, spec.tier, spec.cost, spec.description) == (cls.title, cls.tier, cls.cost, cls.description)
    assert spec.flags == tuple(f.name for f in cls.flags)


# A planned probe's stub: it describes itself until its class exists.
PLANNED = {"title": "a planned probe", "guide": "none", "tier": 2, "cost": "low", "duration": 20,
           "description": "not written yet", "flags": ["duration"],
           "results": {"merge": "last"}, "columns": {"Name": "{evidence.name}"}, "evidence": ["{evidence.name}"]}


def test_a_planned_probe_s_stub_loads(data):
    edit(data / "probes.yaml", lambda d: d["probes"].update(planned=PLANNED))
    lib = load_library(data, probes=PROBES)
    assert lib.probes["planned"].title == "a planned probe" and "planned" not in PROBES


def test_planned_probes_keep_their_stub():
    planned = set(LIB.probes) - set(PROBES)  # none since virtio-rx-path-monitor; see PLANNED below
    assert all(LIB.probes[n].title and LIB.probes[n].cost and LIB.probes[n].flags for n in planned)


def test_every_step_names_a_known_probe_and_its_flags():
    for step in LIB.steps.values():
        spec = LIB.probes[step.probe]
        flags = {f.name for f in PROBES[step.probe].flags} if step.probe in PROBES else set(spec.flags)
        assert {p.flag for p in step.params} <= flags, step.ref


def test_every_step_template_resolves_and_validates_on_a_full_context():
    """Each step's params, filled from a full context, pass the real probe's own validation
    (where the probe exists), except host-dependent kinds (interface names, pids)."""
    scope = {"context": FULL_CONTEXT, "evidence": {}, "result": {}, "step": {}, "let": {}}
    for step in LIB.steps.values():
        params = resolve_params(step.params, scope)
        assert all(v is not None for v in params.values()), step.ref
        cls = PROBES.get(step.probe)
        if cls is None:
            continue
        for f in cls.flags:
            if f.name in params and f.kind not in ("interface", "pid", "tids"):
                f.parse(params[f.name])


def test_every_question_leads_somewhere_and_every_playbook_reaches_a_step():
    for q in LIB.questions.values():
        for a in q.answers:
            LIB.node(a.goto)
    for book in LIB.playbooks.values():
        w = Walk(LIB, {}, book.id)
        for _ in range(5):
            if not isinstance(w.current, Question):
                break
            w.answer(w.current.default_index)
        assert w.current.probe in LIB.probes


def test_every_rule_next_step_exists_and_every_probe_has_rules_or_is_a_leaf():
    for g in LIB.groups:
        for r in g.rules:
            for n in r.next:
                assert n.ref in LIB.steps, (g.id, r.id, n.ref)
    ruled = {p for g in LIB.groups for p in g.probes}
    assert {"drop-summary", "drop-details", "system-latency-summary", "ovs-upcall-summary", "pthread-lock"} <= ruled


# --- bad files ------------------------------------------------------------------------

@pytest.fixture
def data(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    shutil.copytree(DATA_DIR, d)
    return d


def edit(path: Path, fn) -> None:
    doc = yaml.safe_load(path.read_text())
    fn(doc)
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))


def rule(doc, gid, rid):
    g = next(g for g in doc["groups"] if g["id"] == gid)
    return next(r for r in g["rules"] if r["id"] == rid)


def chain(doc, cid):
    return next(c for c in doc["chains"] if c["id"] == cid)


@pytest.mark.parametrize("file, change, key, message", [
    ("packet-loss.yaml", lambda d: d["steps"]["drop-summary"].update(probe="drop-everything"),
     "steps.drop-summary.probe", "unknown probe 'drop-everything'"),
    ("packet-loss.yaml", lambda d: d["steps"]["drop-summary"]["params"].update({"dest-ip": "{context.dst_ip}"}),
     "steps.drop-summary.params.dest-ip", "drop-summary has no flag --dest-ip"),
    ("packet-loss.yaml", lambda d: d["steps"]["drop-summary"]["params"].update({"dst-ip": "{contxt.dst_ip}"}),
     "steps.drop-summary.params.dst-ip", "must start with one of"),
    ("packet-loss.yaml", lambda d: d["steps"]["drop-summary"]["params"].update({"dst-ip": "{context.dest}"}),
     "steps.drop-summary.params.dst-ip", "context field 'dest' is not declared"),
    ("packet-loss.yaml", lambda d: d["questions"]["know-where"]["answers"][0].update(goto="nowhere"),
     "questions.know-where.answers[0].goto", "'packet-loss/nowhere' is no question or step"),
    ("packet-loss.yaml", lambda d: d["steps"]["drop-summary"].update(colour="red"),
     "steps.drop-summary", "unknown key(s): colour"),
    ("packet-loss.yaml", lambda d: d["steps"]["drop-details"].pop("why"),
     "steps.drop-details", "missing key(s): why"),
    ("rules-drops.yaml", lambda d: rule(d, "drop-cause", "reason-netfilter").update(
        when={"path": "evidence.reason", "is": "NETFILTER_DROP"}),
     "groups.drop-cause.rules.reason-netfilter.when", "exactly one operator"),
    ("rules-drops.yaml", lambda d: rule(d, "drop-cause", "reason-netfilter").update(
        when={"path": "evidence.reason", "matches": "([unclosed"}),
     "groups.drop-cause.rules.reason-netfilter.when.matches", "bad regular expression"),
    ("rules-drops.yaml", lambda d: rule(d, "drop-cause", "reason-netfilter").update(level="catastrophic"),
     "groups.drop-cause.rules.reason-netfilter.level", "level is one of"),
    ("rules-drops.yaml", lambda d: rule(d, "drop-cause", "reason-netfilter").update(next=["packet-loss/fix-it"]),
     "groups.drop-cause.rules.reason-netfilter.next[0].step", "'packet-loss/fix-it' is no question or step"),
    ("rules-drops.yaml", lambda d: rule(d, "drop-cause", "reason-netfilter").update(title="{evidence.flow:fancy}"),
     "groups.drop-cause.rules.reason-netfilter.title", "unknown format ':fancy'"),
    ("rules-drops.yaml", lambda d: rule(d, "loss-vs-latency", "latency-not-loss").update(
        let={"late": {"pow": ["context.reported_loss", 2]}}),
     "groups.loss-vs-latency.rules.latency-not-loss.let.late", "a let value is one of"),
    ("probes.yaml", lambda d: d["probes"].update({"planned": dict(PLANNED, tier=4)}),
     "probes.planned.tier", "tier is 1"),
    ("probes.yaml", lambda d: d["probes"]["offcpu"].update(cost="high"),
     "probes.offcpu.cost", "offcpu is implemented: its cost come from the probe's class"),
    ("probes.yaml", lambda d: d["probes"].pop("futex"),
     "probes", "implemented probe(s) futex (probes/registry.py) have no entry"),
    ("probes.yaml", lambda d: d["probes"].update({"planned": {k: v for k, v in PLANNED.items() if k != "cost"}}),
     "probes.planned", "missing key(s): cost"),
    ("probes.yaml", lambda d: d["probes"].update(futex=None),
     "probes.futex", "expected a mapping, got NoneType"),
    ("probes.yaml", lambda d: d["probes"]["drop-summary"]["results"].update(merge="average"),
     "probes.drop-summary.results.merge", "one of sum-entries"),
    ("quick-reference.yaml", lambda d: d["rows"][0].update(summary="vm-network/nothing"),
     "rows[0].summary", "'vm-network/nothing' is no question or step"),
    ("rules-drops.yaml", lambda d: rule(d, "loss-vs-latency", "latency-not-loss")["split"].pop("rest"),
     "groups.loss-vs-latency.rules.latency-not-loss.split", "missing key(s): rest"),
    ("chains.yaml", lambda d: chain(d, "ovs-lock-latency")["links"][1]["say"].update({"revalidator-hold-lock": "x"}),
     "chains.ovs-lock-latency.links.lock-holder.say.revalidator-hold-lock", "is no rule of any rules file"),
    ("chains.yaml", lambda d: chain(d, "ovs-lock-latency")["links"][0]["say"].update({"cpu-burst-high": "{evidnce.pid}"}),
     "chains.ovs-lock-latency.links.cpu-bursts.say.cpu-burst-high", "must start with one of"),
])
def test_bad_playbook_names_file_and_key(data, file, change, key, message):
    edit(data / file, change)
    with pytest.raises(PlaybookError) as err:
        load_library(data, probes=PROBES)
    assert err.value.file == file and err.value.key == key, str(err.value)
    assert message in err.value.message
    assert str(err.value).startswith(f"{file}: {key}: ")


def test_yaml_syntax_error_names_the_line(data):
    (data / "ovs-slow.yaml").write_text("kind: playbook\nid: ovs-slow\ntitle: [unclosed\n")
    with pytest.raises(PlaybookError, match=r"ovs-slow.yaml: line \d+: not valid YAML"):
        load_library(data, probes=PROBES)


def test_file_without_kind(data):
    (data / "notes.yaml").write_text("hello: world\n")
    with pytest.raises(PlaybookError, match="notes.yaml: kind: the file must start with 'kind:'"):
        load_library(data, probes=PROBES)


def test_empty_directory(tmp_path):
    with pytest.raises(PlaybookError, match="no playbook files"):
        load_library(tmp_path, probes=PROBES)


# --- the vocabulary ------------------------------------------------------------------------

W = Where("test.yaml", "k")
SCOPE = {"context": {"dst_ip": "10.0.0.2", "reported_loss": 234}, "result": {"total": 31},
         "evidence": {"count": 1234, "share": 0.4242, "location": "nf_hook_slow+0x9e", "p99_9": 131072,
                      "stack": ["kfree_skb+0x1", "tcp_v4_rcv+0x10"], "names": ["handler23", "revalidator12"],
                      "flow": {"protocol": "udp", "src_ip": "10.0.0.1", "dst_ip": "10.0.0.2", "src_port": 5,
                               "dst_port": 53}},
         "step": {}, "let": {}}


@pytest.mark.parametrize("source, value", [
    ("{evidence.count}", 1234),
    ("{evidence.count:count} packets", "1,234 packets"),
    ("{evidence.share:pct}", "42%"),
    ("{evidence.p99_9:us}", "131.1 ms"),
    ("{evidence.flow:flow}", "10.0.0.1:5 -> 10.0.0.2:53 (UDP)"),
    ("{evidence.location:function}", "nf_hook_slow"),
    ("{evidence.stack.1}", "tcp_v4_rcv+0x10"),
    ("{evidence.nothing or context.dst_ip}", "10.0.0.2"),
    ("{evidence.nothing or 'any'}", "any"),
    ("{evidence.nothing}", None),
    ("{evidence.nothing} left", "? left"),
    ("{{literal}}", "{literal}"),
    (25, 25),
])
def test_templates(source, value):
    assert Template(source, W, frozenset({"dst_ip", "reported_loss"})).value(SCOPE) == value


@pytest.mark.parametrize("cond, expected", [
    ({"path": "evidence.count", "gt": 1000}, True),
    ({"path": "evidence.missing", "gt": 0}, False),
    ({"path": "result.total", "lt": {"path": "context.reported_loss", "times": 0.5}}, True),
    ({"path": "result.total", "lt": {"path": "context.reported_loss", "times": 0.1}}, False),
    ({"path": "evidence.location", "function_in": ["nf_hook_slow"]}, True),
    ({"path": "evidence.stack", "function_in": ["tcp_v4_rcv"]}, True),
    ({"path": "evidence.stack", "function_in": ["tcp_v4_rcv_x"]}, False),
    ({"path": "evidence.names", "matches": "^revalidator"}, True),
    ({"path": "evidence.flow.protocol", "in": ["tcp", "udp"]}, True),
    ({"path": "evidence.missing", "present": False}, True),
    ({"not": {"path": "evidence.count", "eq": 1234}}, False),
    ({"any": [{"path": "evidence.count", "eq": 1}, {"path": "evidence.share", "ge": 0.4}]}, True),
    ({"all": [{"path": "evidence.count", "eq": 1234}, {"path": "evidence.share", "ge": 0.5}]}, False),
])
def test_conditions(cond, expected):
    assert compile_condition(cond, W)(SCOPE) is expected


def test_let_arithmetic_and_missing_values():
    assert compile_let({"sub": ["context.reported_loss", "result.total"]}, W)(SCOPE) == 203
    assert compile_let({"div": ["result.total", 0]}, W)(SCOPE) is None
    assert compile_let({"add": ["result.total", "evidence.missing"]}, W)(SCOPE) is None


def test_no_python_is_ever_evaluated():
    """A template or condition that looks like code is rejected at load, not run."""
    with pytest.raises(PlaybookError, match="is not a path"):
        Template("{__import__('os').system('true')}", W)
    with pytest.raises(PlaybookError, match="must start with one of"):
        compile_condition({"path": "__builtins__.open", "present": True}, W)


def step_edges() -> dict[str, set[str]]:
    """Step → steps it can lead to: its rules' next steps (whose condition can hold for this
    step's probe with a full context) and its fallback."""
    edges: dict[str, set[str]] = {ref: set() for ref in LIB.steps}
    for ref, step in LIB.steps.items():
        if step.fallback:
            edges[ref].add(step.fallback)
        scope = {"context": FULL_CONTEXT, "evidence": {}, "result": {}, "let": {},
                 "step": {"ref": ref, "probe": step.probe}}
        for g in LIB.groups_for(step.probe):
            for r in g.rules:
                edges[ref] |= {n.ref for n in r.next if n.when is None or n.when(scope)}
    return edges


def test_every_quick_reference_rows_details_step_is_reachable_from_its_summary():
    edges = step_edges()
    for row in LIB.quick_reference:
        if not row.details:
            continue
        seen, todo = {row.summary}, [row.summary]
        while todo:
            for nxt in edges[todo.pop()] - seen:
                seen.add(nxt)
                todo.append(nxt)
        assert row.details in seen, f"{row.problem}: {row.details} cannot be reached from {row.summary}"


def test_a_fallback_must_be_a_step(data):
    edit(data / "vm-network.yaml", lambda d: d["steps"]["tun-ring-monitor"].update(fallback="which-part"))
    with pytest.raises(PlaybookError, match="tun-ring-monitor.fallback: 'vm-network/which-part' is a question"):
        load_library(data, probes=PROBES)
