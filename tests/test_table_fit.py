"""Table columns fitted to the terminal: the flow (and an event's time) are never cut."""

from __future__ import annotations

import pytest

from wizard.widgets.tables import MIN_WIDTH, cut, fit_widths

FLOW = "10.253.2.1:41999 -> 10.253.2.2:9999 (UDP)"
DETAILS = (["time", "flow", "reason", "site", "device", "cpu", "comm"],
           [["09:25:36.123", FLOW, "NETFILTER_DROP", "nf_hook_slow", "nsp52f406", "1", "python3"]])
SUMMARY = (["Count", "Share", "Interface", "Reason", "Where", "Flow"],
           [["118", "67%", "nsp52f406", "NETFILTER_DROP", "nft_do_chain+0x46f [nf_tables] (a long one)", FLOW]])


@pytest.mark.parametrize("table", [DETAILS, SUMMARY], ids=["details", "summary"])
@pytest.mark.parametrize("width", [80, 100, 200])
def test_kept_columns_stay_whole_and_the_rest_fits(table, width):
    titles, rows = table
    keep = [t.lower() in ("flow", "time") for t in titles]
    room, pad = width - 2, 2
    widths = fit_widths(titles, rows, room, keep, pad)
    shown = [w for w in widths if w]
    assert sum(shown) + pad * len(shown) <= room
    for i, t in enumerate(titles):
        if keep[i]:
            assert widths[i] == max(len(t), len(rows[0][i]))  # whole
        elif widths[i]:
            assert widths[i] >= min(MIN_WIDTH, len(rows[0][i]), len(t)) or widths[i] >= len(t)
    if width >= 200:
        assert widths == [max(len(t), len(rows[0][i])) for i, t in enumerate(titles)]
    # a column left out is one from the right of those kept
    left_out = [i for i, w in enumerate(widths) if not w]
    assert left_out == sorted(left_out) and all(not keep[i] for i in left_out)


def test_cut_marks_what_it_cut():
    assert cut("NETFILTER_DROP", 8) == "NETFILT…" and cut("lo", 8) == "lo"
