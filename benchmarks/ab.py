"""What the A/B tools (small_ab, embedded_ab, pyfuse3_ab) share.

An A/B tool runs the daemons of two sides at once (two source trees, or two
interpreters) and measures them back to back, in an order that turns round
from one round to the next (A B, B A, ...), so that the machine's load, which
moves a lot on a shared machine, falls on both alike.  Each ratio it prints is
to a reference measured in the same round (nullfs, the local FIFO, or side A).
Run a tool once with the same thing on both sides first: that A/A ratio is its
own error on the day.

Here: the sides' mounts, their work folder and its removal however the run
ends, the order of a round, and the lines of medians a tool ends with.
Samples are (rate, CPU seconds) pairs, one a round.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from .rig import ROOT, Mount, in_tree

SIDES = "AB"
Sample = tuple[float, float]  # (rate, CPU seconds)


def tree_arguments(doc: str) -> argparse.ArgumentParser:
    """The command line of a tool that compares two source trees: --a-tree and
    --b-tree, then the tool's own; *doc*'s first paragraph describes it."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--a-tree", required=True, type=Path, help="dnpfs source tree of side A")
    ap.add_argument("--b-tree", type=Path, default=ROOT, help="of side B (default: this one)")
    return ap


def on_trees(args: argparse.Namespace) -> Callable[[str, list[str]], list[str]]:
    """side_mounts' wrap that runs each side's daemons on its tree's dnpfs."""
    trees = {"A": args.a_tree.resolve(), "B": args.b_tree.resolve()}
    return lambda side, argv: in_tree(argv, trees[side])


def work_folder(tool: str) -> Path:
    """A fresh folder for one run's mounts, stores, logs and data."""
    return Path(tempfile.mkdtemp(prefix=f"dnpfs-{tool}-"))


def side_mounts(work: Path, roles: Sequence[str], args: Callable[[str], list[str]],
                wrap: Callable[[str, list[str]], list[str]]) -> dict[tuple[str, str], Mount]:
    """(side, role) -> a mount of each side in each role, under *work*:
    `dnpfs mount` with args(side), its argv put through wrap(side, argv)
    (which tree or interpreter runs that side)."""
    return {(side, role): Mount(work / f"{side}{role}", args(side), work / f"{side}{role}.log",
                                wrap=lambda argv, side=side: wrap(side, argv))
            for side in SIDES for role in roles}


@contextlib.contextmanager
def running(mounts: Iterable[Mount], work: Path, keep: bool = False) -> Iterator[None]:
    """Start *mounts* in turn; when the block ends, however it ends, stop them
    and remove *work*, or with *keep* say where it is kept."""
    mounts = list(mounts)
    try:
        for m in mounts:
            m.start()
        yield
    finally:
        for m in mounts:
            m.stop()
        if keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def in_turn(sides: Sequence[str], i: int) -> Sequence[str]:
    """The order of round *i* (from 0): *sides*, then backwards, and so on."""
    return sides if i % 2 == 0 else sides[::-1]


def median_text(label: str, xs: Sequence[Sample], rate: str, cpu: str,
                cpu_scale: float = 1.0) -> str:
    """"LABEL median RATE  CPU": the medians of the samples' rates and CPU
    seconds, each through its format ("{:6.0f} MiB/s"), CPU times *cpu_scale*
    first (per write, per GiB)."""
    return (f"{label} median {rate.format(statistics.median(x for x, _ in xs))}"
            f"  {cpu.format(statistics.median(c for _, c in xs) * cpu_scale)}")


def ratios(xs: Sequence[Sample], refs: Sequence[float]) -> list[float]:
    """Each sample's rate over the reference rate of its round."""
    return [x / ref for (x, _), ref in zip(xs, refs)]


def b_over_a(a: Sequence[Sample], b: Sequence[Sample]) -> list[float]:
    return ratios(b, [x for x, _ in a])


def ratio_text(label: str, rs: Sequence[float], per: str) -> str:
    """"LABEL median 0.93  per PER [0.91, 0.95, ...]"."""
    return f"{label} median {statistics.median(rs):.2f}  per {per} {[round(r, 2) for r in rs]}"
