"""The mount's fetch budget (--fetch-mib): what a reading daemon holds of
records fetched ahead of its readers, whatever the number of readers.

Issue #26, item 3: 100 readers on 100 pipes of 8 MB, each reading 64 KiB and
keeping its file open, took the reading daemon to 1,029 MiB; and from 100 to
1,000 readers it must grow by no more than the budget.  The procedure is
benchmarks/readers.py's (the "readers" benchmark reports the same figures)."""

from __future__ import annotations

import contextlib
import os
import uuid

import pytest

from benchmarks.readers import BIG, FEW, MANY, SMALL, fill, hold

from ..util import wait_for

pytestmark = pytest.mark.kafka

BUDGET_MIB = 64  # the default --fetch-mib
MAX_RSS_MIB = 300


def test_readers_holding_their_files_open_stay_within_the_fetch_budget(make_mount,
                                                                        kafka_bootstrap):
    prefix = f"fb{uuid.uuid4().hex[:8]}."
    args = ["--kafka", kafka_bootstrap, "--topic-prefix", prefix]
    writer = make_mount(args, name="writer")
    names = [f"p{i:04d}" for i in range(MANY)]
    for name in names:
        os.mkfifo(writer / name)
    try:
        fill([writer / n for n in names[:FEW]], BIG)
        fill([writer / n for n in names[FEW:]], SMALL)
        reader = make_mount(args, name="reader")  # --fetch-mib 64, the default
        wait_for(lambda: all(os.path.exists(reader / n) for n in names), 30, what="pipes")
        # A named group: the fetch budget is the consumer groups' (the default
        # group is a share group, which fetches only for a read).
        held = hold(reader.pid, [[reader / f"{n}@g" for n in names[:FEW]],
                                 [reader / f"{n}@g" for n in names[FEW:]]])
        few, many = held["waves"]
        print(f"reading daemon: {held['start']:.0f} MiB at start; {FEW} readers holding their"
              f" files open: {few['rss']:.0f} MiB (peak {few['peak']:.0f}); {MANY}:"
              f" {many['rss']:.0f} MiB (peak {many['peak']:.0f})")
        assert few["peak"] < MAX_RSS_MIB, held
        # Without the budget each of the first 100 held up to 8 MiB; without
        # dropping the record a reader is in (beyond the share) and without the
        # leaner members, 1,000 readers grew it by twice the budget
        # (docs/decisions.md, "what a reader group costs a reading mount").
        assert many["rss"] - few["rss"] <= BUDGET_MIB, held
    finally:
        for name in names:  # give the shared broker its disk back
            with contextlib.suppress(OSError):
                os.unlink(writer / name)
