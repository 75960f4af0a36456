"""A heaptrack --raw trace: the heap blocks live at given instants, and their symbolized stacks.

The raw format (heaptrack 1.4, before heaptrack_interpret): `m LEN NAME BASE …` maps a module
(NAME `x` is the executable) at load address BASE; `t IP PARENT` defines trace node n (numbered
from 1 in order) as instruction pointer IP called from node PARENT; `+ SIZE TRACE PTR` is an
allocation, `- PTR` a free; `c MS` advances the clock (milliseconds since the process started).
All numbers are hexadecimal.
"""
import json
import re
import subprocess


class Trace:
    def __init__(self):
        self.executable_base = None
        self.libraries = []  # (load address, path), for frames outside the executable
        self.nodes = [None]  # node n = (ip, parent node)
        self.snapshots = []  # live blocks {ptr: (size, node)} at each cutoff


def replay(path, cutoffs_ms):
    """Replays the trace, keeping a copy of the live blocks as the clock passes each cutoff
    (ascending, in ms since the trace began)."""
    trace = Trace()
    live = {}
    pending = list(cutoffs_ms)
    reader = subprocess.Popen(["zstdcat", path], stdout=subprocess.PIPE, text=True,
                              bufsize=1 << 20)
    for line in reader.stdout:
        kind = line[0]
        if kind == "+":
            _, size, node, ptr = line.split()
            live[int(ptr, 16)] = (int(size, 16), int(node, 16))
        elif kind == "-":
            live.pop(int(line.split()[1], 16), None)
        elif kind == "t":
            _, ip, parent = line.split()
            trace.nodes.append((int(ip, 16), int(parent, 16)))
        elif kind == "c":
            now = int(line.split()[1], 16)
            while pending and now > pending[0]:
                trace.snapshots.append(dict(live))
                pending.pop(0)
            if not pending:
                break
        elif kind == "m":
            fields = line.split()
            if len(fields) > 3:
                if fields[2] == "x":
                    trace.executable_base = int(fields[3], 16)
                else:
                    trace.libraries.append((int(fields[3], 16), fields[2]))
    reader.kill()
    reader.wait()
    if pending:
        raise RuntimeError(f"the trace ends before {len(pending)} snapshot(s): is it complete?")
    return trace


def stack_ips(trace, node):
    while node:
        ip, node = trace.nodes[node]
        yield ip


# Legacy Rust symbol mangling, as llvm-symbolizer leaves it in linkage names.
ESCAPES = {"$LT$": "<", "$GT$": ">", "$C$": ",", "$RF$": "&", "$BP$": "*", "$SP$": "@",
           "$LP$": "(", "$RP$": ")", "$u20$": " ", "$u27$": "'", "$u5b$": "[", "$u5d$": "]",
           "$u7b$": "{", "$u7d$": "}", "$u7e$": "~", "$u3b$": ";", "$u2b$": "+", "$u22$": '"',
           "..": "::"}
ESCAPE = re.compile("|".join(re.escape(e) for e in ESCAPES))
HASH = re.compile(r"::h[0-9a-f]{16}( \(\.llvm\.\d+\))?$")


def readable(name):
    name = ESCAPE.sub(lambda m: ESCAPES[m.group(0)], HASH.sub("", name))
    name = name.replace("::_{{", "::{{")  # "_" escapes a leading "<" or "{"
    return name[1:] if name.startswith("_<") else name


def where(symbol):
    path = symbol.get("FileName") or "?"
    return "/".join(path.split("/")[-3:]) + f":{symbol.get('Line', 0)}"


def symbolize(binary, trace, ips):
    """{ip: [frames]} with the executable's inlined frames expanded (innermost first), each
    frame "function @ file:line"; frames in libraries are the library's path."""
    ips = sorted(ips)
    base = trace.executable_base
    mine = [ip for ip in ips if base is not None and 0 <= ip - base < 1 << 32]
    names = {}
    if mine:
        # A frame's ip is a return address: the call is the instruction before it.
        query = "".join(f"{ip - base - 1:#x}\n" for ip in mine)
        done = subprocess.run(["llvm-symbolizer", f"--obj={binary}", "--output-style=JSON",
                               "--inlining", "--demangle", "--functions=linkage"],
                              input=query, capture_output=True, text=True, check=True)
        for ip, line in zip(mine, done.stdout.splitlines()):
            symbols = json.loads(line).get("Symbol") or []
            names[ip] = [f"{readable(s.get('FunctionName') or '??')} @ {where(s)}"
                         for s in symbols] or ["??"]
    libraries = sorted(trace.libraries)
    for ip in ips:
        if ip not in names:
            loaded = [path for start, path in libraries if start <= ip]
            names[ip] = [loaded[-1] if loaded else "??"]
    return names
