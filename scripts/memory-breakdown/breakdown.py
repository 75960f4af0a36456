#!/usr/bin/env python3
"""Resident memory per session, by component: a heaptrack --raw trace against pagemap snapshots.

Usage: breakdown.py --binary BIN --trace TRACE.raw.zst --t0 SECONDS --sessions N
                    BEFORE.json HELD.json [AFTER.json] [--detail] [--json OUT]

The snapshots (snapshot.py) were taken before the sessions opened, while they were held, and
optionally after they closed; --t0 is the unix time at which the traced process was started, to
find each snapshot's instant in the trace. For each snapshot, every resident anonymous page's
bytes go to the live heap blocks that overlap it (each block with its 16-byte malloc header),
and each block to a component by its allocation stack (components.py). What is left is free space
in pages that hold a live block (malloc's fragmentation and free chunks), and resident pages
that hold no live block at all (freed memory malloc keeps, thread stacks, arena headers).
Per session = (held − before) / N; "after close" = (after − before) / N.
"""
import argparse
import json
import os
import re
import sys
from collections import defaultdict

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import heaptrack_raw as heaptrack  # noqa: E402
from components import COMPONENTS, NOISE, OWN  # noqa: E402

PAGE = 4096
HEADER = 16  # glibc's chunk header before each block
FREE_SPACE = ("malloc", "free space in pages holding live blocks")
NO_BLOCKS = ("malloc", "resident pages without live blocks (kept free memory, stacks)")
OTHER = ("other", "stacks matching no component (listed below)")


class Classifier:
    def __init__(self, trace, names):
        self.trace, self.names = trace, names
        self.rules = [(group, name, re.compile(rx)) for group, name, rx in COMPONENTS]
        self.noise, self.own = re.compile(NOISE), re.compile(OWN)
        self.components, self.stacks = {}, {}

    def frames(self, node):
        return [f for ip in heaptrack.stack_ips(self.trace, node) for f in self.names[ip]]

    def shown(self, node, depth=4):
        """The innermost frames past the allocator: what asked for the memory."""
        if (node, depth) not in self.stacks:
            frames = self.frames(node)
            useful = [f for f in frames if not self.noise.search(f)] or frames
            self.stacks[(node, depth)] = " ← ".join(useful[:depth])
        return self.stacks[(node, depth)]

    def component(self, node):
        """The first component matching a frame, innermost frame first; a frame of our own code
        that no component matches ends the search in "other"."""
        if node not in self.components:
            self.components[node] = OTHER
            for frame in self.frames(node):
                found = next(((g, n) for g, n, rx in self.rules if rx.search(frame)), None)
                if found or self.own.search(frame):
                    self.components[node] = found or OTHER
                    break
        return self.components[node]


def attribute(live, pages, classify):
    """Resident and allocated bytes per component, plus the two leftovers."""
    present = set(pages)
    resident, allocated = defaultdict(int), defaultdict(int)
    covered = defaultdict(int)
    for ptr, (size, node) in live.items():
        label = classify(node)
        allocated[label] += size
        start, end = ptr - HEADER, (ptr + size + 15) // 16 * 16
        for page in range(start // PAGE, (end - 1) // PAGE + 1):
            if page in present:
                overlap = min(end, (page + 1) * PAGE) - max(start, page * PAGE)
                resident[label] += overlap
                covered[page] += overlap
    resident[FREE_SPACE] = sum(PAGE - min(c, PAGE) for c in covered.values())
    resident[NO_BLOCKS] = (len(present) - len(covered)) * PAGE
    return resident, allocated


def per_session(later, earlier, label, sessions):
    return (later.get(label, 0) - earlier.get(label, 0)) / sessions / 1024


def report(results, sessions, rss, classifier, live):
    (res0, alloc0), (res1, alloc1) = results[0], results[1]
    after = results[2] if len(results) > 2 else None
    labels = [(g, n) for g, n, _ in COMPONENTS] + [OTHER, FREE_SPACE, NO_BLOCKS]
    head = "| component | resident KiB/session | allocated KiB/session |"
    rule = "|---|---|---|"
    if after:
        head += " resident after close KiB/session |"
        rule += "---|"
    print(f"per session: (with {sessions:,} sessions − before) / {sessions:,}\n")
    print(head)
    print(rule)
    totals = [0.0, 0.0, 0.0]

    def row(name, values, bold=False):
        cells = [f"{v:.2f}" for v in values[: 3 if after else 2]]
        if bold:
            name, cells = f"**{name}**", [f"**{c}**" for c in cells]
        print(f"| {name} | {' | '.join(cells)} |")

    for group in dict.fromkeys(g for g, _ in labels):
        members = [label for label in labels if label[0] == group]
        subtotal = [0.0, 0.0, 0.0]
        for label in members:
            values = [per_session(res1, res0, label, sessions),
                      per_session(alloc1, alloc0, label, sessions),
                      per_session(after[0], res0, label, sessions) if after else 0.0]
            subtotal = [s + v for s, v in zip(subtotal, values)]
            row(f"{group}: {label[1]}", values)
        if len(members) > 1:
            row(f"{group} subtotal", subtotal, bold=True)
        totals = [t + s for t, s in zip(totals, subtotal)]
    row("total attributed", totals, bold=True)
    growth = [f"{(rss[1] - rss[0]) / sessions:.2f}", "—"]
    if after:
        growth.append(f"{(rss[2] - rss[0]) / sessions:.2f}")
    print(f"| VmRSS growth | {' | '.join(growth)} |")
    print(f"\nVmRSS: before {rss[0]:,} KiB, with the sessions {rss[1]:,} KiB"
          + (f", after close {rss[2]:,} KiB" if after else ""))
    others(live, classifier, sessions)


def others(live, classifier, sessions, top=10):
    """The stacks behind the "other" row, largest growth first (allocated bytes)."""
    growth = defaultdict(lambda: [0, 0])
    for sign, blocks in ((-1, live[0]), (1, live[1])):
        for size, node in blocks.values():
            if classifier.component(node) == OTHER:
                entry = growth[classifier.shown(node)]
                entry[0] += sign * size
                entry[1] += sign
    listed = sorted(growth.items(), key=lambda kv: -abs(kv[1][0]))[:top]
    listed = [(stack, (size, count)) for stack, (size, count) in listed
              if abs(size) / sessions >= 5 or abs(count) / sessions >= 0.005]
    if listed:
        print('\n"other", its largest stacks (allocated KiB/session, blocks/session):')
        for stack, (size, count) in listed:
            print(f"  {size / sessions / 1024:7.2f} KiB {count / sessions:6.2f}  {stack}")


def detail(live, classifier, sessions, top=6):
    """Each component's most frequent new block sizes, with the frames that allocated them."""
    counts = defaultdict(int)
    for sign, blocks in ((-1, live[0]), (1, live[1])):
        for size, node in blocks.values():
            counts[(classifier.component(node), size, classifier.shown(node, 3))] += sign
    print("\ndetail: new blocks per session by component, block size and allocating frames")
    by_component = defaultdict(list)
    for (label, size, stack), n in counts.items():
        if n > 0:
            by_component[label].append((n * size, n, size, stack))
    for label in [(g, n) for g, n, _ in COMPONENTS] + [OTHER]:
        if label not in by_component:
            continue
        print(f"{label[0]}: {label[1]}")
        for total, n, size, stack in sorted(by_component[label], reverse=True)[:top]:
            kib = total / sessions / 1024
            print(f"  {n / sessions:6.2f} × {size:7,} B = {kib:7.2f} KiB  {stack}")


def progress(what):
    print(f"breakdown: {what}", file=sys.stderr, flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", required=True)
    parser.add_argument("--trace", required=True)
    parser.add_argument("--t0", required=True, type=float)
    parser.add_argument("--sessions", required=True, type=int)
    parser.add_argument("--detail", action="store_true")
    parser.add_argument("--json", help="write the per-component bytes of each snapshot here")
    parser.add_argument("snapshots", nargs="+", help="before, held[, after close]")
    args = parser.parse_args()
    if len(args.snapshots) not in (2, 3):
        parser.error("give two snapshots (before, held) or three (…, after close)")
    snapshots = []
    for path in args.snapshots:
        with open(path) as f:
            snapshots.append(json.load(f))
    cutoffs = [(s["time"] - args.t0) * 1000 for s in snapshots]
    progress("replaying the trace")
    trace = heaptrack.replay(args.trace, cutoffs)
    ips = {ip for live in trace.snapshots for _, node in live.values()
           for ip in heaptrack.stack_ips(trace, node)}
    progress(f"symbolizing {len(ips):,} addresses")
    classifier = Classifier(trace, heaptrack.symbolize(args.binary, trace, ips))
    progress("attributing the resident pages")
    results = [attribute(live, s["pages"], classifier.component)
               for live, s in zip(trace.snapshots, snapshots)]
    report(results, args.sessions, [s["rss_kib"] for s in snapshots], classifier, trace.snapshots)
    if args.detail:
        detail(trace.snapshots, classifier, args.sessions)
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{"rss_kib": s["rss_kib"],
                        "resident": {": ".join(k): v for k, v in res.items()},
                        "allocated": {": ".join(k): v for k, v in alloc.items()}}
                       for s, (res, alloc) in zip(snapshots, results)], f, indent=1)


if __name__ == "__main__":
    main()
