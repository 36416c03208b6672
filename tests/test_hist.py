from vocab.hist import Log2Hist, bucket_bounds, render_text
from probes.runtime.tracefs import parse_format, parse_print_symbolic


def test_bucket_bounds():
    assert bucket_bounds(0) == (0, 2)
    assert bucket_bounds(1) == (2, 4)
    assert bucket_bounds(10) == (1024, 2048)


def test_from_values_and_percentiles():
    # 990 fast values (8-15 us) and 10 slow ones (131072-262143 us): the guide's OVS tail.
    h = Log2Hist.from_values([10] * 990 + [200_000] * 10)
    assert h.total == 1000
    assert h.percentile(50) == 15
    assert h.percentile(99) == 15
    assert h.percentile(99.9) == 262143
    assert h.max_bound() == 262143
    s = h.summary()
    assert s["p50"] == 15 and s["p99_9"] == 262143 and s["count"] == 1000


def test_merge_and_empty():
    a, b = Log2Hist({3: 2}), Log2Hist({3: 1, 5: 4})
    assert a.merged(b).counts == {3: 3, 5: 4}
    assert Log2Hist({}).percentile(50) is None
    assert "no samples" in render_text(Log2Hist({}))
    assert "8 -> 15" in render_text(a)


FORMAT = """name: kfree_skb
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:enum skb_drop_reason reason;\toffset:36;\tsize:4;\tsigned:0;

print fmt: "skbaddr=%p reason: %s", REC->skbaddr, __print_symbolic(REC->reason, { 2, "NOT_SPECIFIED" }, { 3, "NO_SOCKET" }, { 0x40, "QDISC_DROP" })
"""


def test_tracefs_format_parsing():
    fmt = parse_format(FORMAT)
    assert fmt.fields["skbaddr"] == ("void *", 8, 8)
    assert fmt.fields["reason"] == ("enum skb_drop_reason", 36, 4)
    assert parse_print_symbolic(fmt.print_fmt, "reason") == {2: "NOT_SPECIFIED", 3: "NO_SOCKET", 64: "QDISC_DROP"}
    assert parse_print_symbolic(fmt.print_fmt, "other") == {}


def test_buckets_back_to_a_histogram():
    h = Log2Hist.from_values([0, 1, 3, 3, 900, 70_000])
    again = Log2Hist.from_buckets(h.summary()["buckets"] * 2)  # repeated buckets add up
    assert again.counts == {slot: 2 * n for slot, n in h.counts.items()}
    assert again.summary()["p50"] == h.summary()["p50"] and again.max_bound() == h.max_bound()
