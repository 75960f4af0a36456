#!/usr/bin/env python3
"""Which anonymous pages of a process are resident, now.

Usage: snapshot.py PID OUT.json

Reads /proc/PID/maps and, for every private anonymous read-write mapping (the heap, malloc's
arenas and mmap'd blocks, thread stacks), the present bit of each page from /proc/PID/pagemap.
Writes {"time": unix seconds, "rss_kib": VmRSS, "pages": [resident page numbers]}.
"""
import json
import struct
import sys
import time

PAGE = 4096
PRESENT = 1 << 63


def anonymous_mappings(pid):
    with open(f"/proc/{pid}/maps") as maps:
        for line in maps:
            fields = line.split()
            start, end = (int(x, 16) for x in fields[0].split("-"))
            name = fields[5] if len(fields) > 5 else ""
            if fields[1].startswith("rw") and name in ("", "[heap]"):
                yield start, end


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def main():
    pid, out = int(sys.argv[1]), sys.argv[2]
    taken = time.time()
    pages = []
    with open(f"/proc/{pid}/pagemap", "rb") as pagemap:
        for start, end in anonymous_mappings(pid):
            first = start // PAGE
            pagemap.seek(first * 8)
            entries = pagemap.read((end - start) // PAGE * 8)
            pages.extend(first + i for i, (entry,) in enumerate(struct.iter_unpack("<Q", entries))
                         if entry & PRESENT)
    snapshot = {"time": taken, "rss_kib": rss_kib(pid), "pages": pages}
    with open(out, "w") as f:
        json.dump(snapshot, f)
    print(f"snapshot {out}: VmRSS {snapshot['rss_kib']} KiB, {len(pages)} anonymous pages resident",
          file=sys.stderr)


if __name__ == "__main__":
    main()
