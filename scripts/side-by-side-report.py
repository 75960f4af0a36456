#!/usr/bin/env python3
"""Medians and ratios from the JSON that scripts/side-by-side.sh collected.

Usage: side-by-side-report.py DIR   (files named <server>.<label>.<round>.json; the memory runs'
labels are memory-<sessions>-<idle|subscribed>)
"""
import glob
import json
import os
import statistics
import sys


def load(directory):
    runs = {}
    for path in sorted(glob.glob(os.path.join(directory, "*.json"))):
        server, label, _round, _ext = os.path.basename(path).split(".")
        with open(path) as f:
            text = f.read().strip()
        if not text:
            continue
        runs.setdefault((server, label), []).append(json.loads(text))
    return runs


def pick(run, path):
    value = run
    for key in path.split("."):
        if not isinstance(value, dict) or value.get(key) is None:
            return None
        value = value[key]
    return value


def median(runs, key, path):
    values = [v for v in (pick(r, path) for r in runs.get(key, [])) if v is not None]
    return statistics.median(values) if values else None


def fmt(value, digits=1):
    return "—" if value is None else f"{value:,.{digits}f}"


def ratio(a, b):
    return None if a is None or b in (None, 0) else a / b


def memory_table(runs):
    """Total RSS growth per idle session, each run on a fresh server, and where RSS stood 5 s
    after the sessions closed."""
    labels = sorted({label for _, label in runs if label.startswith("memory-")},
                    key=lambda label: (int(label.split("-")[1]), label.split("-")[2]))
    servers = [s for s in ("portcullis", "base", "mosquitto") if any((s, l) in runs for l in labels)]
    rounds = max(len(runs[(s, l)]) for s in servers for l in labels if (s, l) in runs)
    print(f"memory: medians of {rounds} round(s) (range when more), a fresh server process per run\n")
    print("| server | sessions | kind | KiB/session (total RSS growth) | RSS before MB | with sessions MB "
          "| 5 s after close MB | after close over before | failed |")
    print("|---|---|---|---|---|---|---|---|---|")
    kib = {}
    for label in labels:
        _, size, kind = label.split("-")
        for server in servers:
            key = (server, label)
            if key not in runs:
                continue
            kib[key] = median(runs, key, "hold.server.kib_per_session")
            every = sorted(v for v in (pick(r, "hold.server.kib_per_session") for r in runs[key])
                           if v is not None)
            spread = f" ({every[0]:.1f}–{every[-1]:.1f})" if len(every) > 1 else ""
            before = median(runs, key, "hold.server.rss_before_kib")
            held = median(runs, key, "hold.server.rss_after_kib")
            after = median(runs, key, "rss_5s_after_close_kib")
            failed = median(runs, key, "hold.failed")
            over = None if None in (before, after) else 100 * (after - before) / before
            cells = [server, f"{int(size):,}", kind, fmt(kib[key]) + spread, fmt(mb(before)), fmt(mb(held)),
                     fmt(mb(after)), "—" if over is None else f"{over:+,.0f} %", fmt(failed, 0)]
            print(f"| {' | '.join(cells)} |")
    names = [f"{int(l.split('-')[1]):,} {l.split('-')[2]}" for l in labels]
    print("\n| ratio of KiB per session | " + " | ".join(names) + " |")
    print(f"|---|{'---|' * len(labels)}")
    for other in [s for s in servers if s != "portcullis"]:
        cells = [fmt(ratio(kib.get(("portcullis", l)), kib.get((other, l))), 2) for l in labels]
        print(f"| Portcullis / {other} | {' | '.join(cells)} |")
    print()


def mb(kib):
    return None if kib is None else kib / 1024


def main():
    runs = load(sys.argv[1])
    if any(label.startswith("memory-") for _, label in runs):
        memory_table(runs)
    runs = {key: value for key, value in runs.items() if not key[1].startswith("memory-")}
    if not runs:
        return
    servers = ["portcullis", "mosquitto", "broker"]
    if any(server == "base" for server, _ in runs):
        servers.insert(1, "base")
    rows = [
        ("connect", "connections/s", "connections_per_second", 0),
        ("connect", "p50 connect ms", "latency_ms.p50", 2),
        ("connect", "p99 connect ms", "latency_ms.p99", 2),
        ("connect", "server CPU µs/connection", "server.cpu_us_per_connection", 0),
        ("connect", "failed", "failed", 0),
        ("known", "server CPU µs/connection (known devices, full handshake)", "server.cpu_us_per_connection", 0),
        ("resume", "connections/s (resumed)", "connections_per_second", 0),
        ("resume", "server CPU µs/connection (resumed)", "server.cpu_us_per_connection", 0),
        ("resume", "fraction resumed", "resumed_fraction", 3),
        ("hold", "RSS KiB/idle session", "server.kib_per_session", 1),
        ("flood", "QoS 0 received msg/s (unlimited)", "received_per_second", 0),
        ("flood", "server CPU µs/message", "server.cpu_us_per_message_published", 2),
        ("rate", "QoS 0 p50 latency ms (fixed rate)", "latency_ms.p50", 2),
        ("rate", "QoS 0 p99 latency ms (fixed rate)", "latency_ms.p99", 2),
        ("rate", "QoS 0 loss (fixed rate)", "loss", 0),
    ]
    rounds = max((len(v) for k, v in runs.items() if k[1] != "hold"), default=0)
    print(f"medians of {rounds} interleaved round(s)\n")
    print(f"| metric | {' | '.join(servers)} |")
    print(f"|---|{'---|' * len(servers)}")
    for label, name, path, digits in rows:
        cells = [fmt(median(runs, (s, label), path), digits) for s in servers]
        print(f"| {name} | {' | '.join(cells)} |")

    cpu = {s: median(runs, (s, "connect"), "server.cpu_us_per_connection") for s in servers}
    resumed = median(runs, ("portcullis", "resume"), "server.cpu_us_per_connection")
    hold = {s: median(runs, (s, "hold"), "server.kib_per_session") for s in servers}
    flood = {s: median(runs, (s, "flood"), "received_per_second") for s in servers}
    front_end_kib = None if None in (hold["portcullis"], hold["broker"]) else hold["portcullis"] - hold["broker"]
    print("\n| ratio | value | target |")
    print("|---|---|---|")
    print(f"| Portcullis / mosquitto CPU per mTLS connection | {fmt(ratio(cpu['portcullis'], cpu['mosquitto']), 3)} | ≤ 0.286 (1/3.5) |")
    print(f"| Portcullis / bare broker CPU per connection | {fmt(ratio(cpu['portcullis'], cpu['broker']), 2)} | (forwarding + TLS overhead) |")
    print(f"| Portcullis resumed / full CPU per connection | {fmt(ratio(resumed, cpu['portcullis']), 2)} | |")
    known = {s: median(runs, (s, "known"), "server.cpu_us_per_connection") for s in servers}
    print(f"| Portcullis / mosquitto CPU per known-device full handshake | {fmt(ratio(known['portcullis'], known['mosquitto']), 3)} | ≤ 0.286 |")
    print(f"| front-end KiB per idle session (Portcullis − bare broker) | {fmt(front_end_kib, 1)} | ≤ 32 |")
    print(f"| Portcullis / bare broker QoS 0 received msg/s | {fmt(ratio(flood['portcullis'], flood['broker']), 2)} | ≥ 0.80 |")
    if "base" in servers:
        resumed_base = median(runs, ("base", "resume"), "server.cpu_us_per_connection")
        print(f"| Portcullis / base CPU per connection (full, new certificate) | {fmt(ratio(cpu['portcullis'], cpu['base']), 3)} | ≤ 1.02 |")
        print(f"| Portcullis / base CPU per connection (known devices) | {fmt(ratio(known['portcullis'], known['base']), 3)} | ≤ 1.02 |")
        print(f"| Portcullis / base CPU per connection (resumed) | {fmt(ratio(resumed, resumed_base), 3)} | ≤ 1.02 |")
        print(f"| Portcullis / base RSS KiB per idle session | {fmt(ratio(hold['portcullis'], hold['base']), 3)} | ≤ 1.02 |")
        print(f"| Portcullis / base QoS 0 received msg/s | {fmt(ratio(flood['portcullis'], flood['base']), 3)} | ≥ 0.98 |")
        for label in ("connect", "known", "resume"):
            pairs(runs, label, "server.cpu_us_per_connection")


def pairs(runs, label, path):
    """Each round's Portcullis / base ratio: a measurement and its base twin ran back to back."""
    now = [pick(r, path) for r in runs.get(("portcullis", label), [])]
    base = [pick(r, path) for r in runs.get(("base", label), [])]
    values = sorted(ratio(a, b) for a, b in zip(now, base) if ratio(a, b) is not None)
    if values:
        listed = ", ".join(f"{v:.2f}" for v in values)
        print(f"\n{label}: {len(values)} round pairs, Portcullis / base median {statistics.median(values):.3f} ({listed})")


if __name__ == "__main__":
    main()
