#!/usr/bin/env python3
"""Finds wgmma.sp metadata registers that the SASS overwrites while the wgmma may still run.

ptxas keeps the A registers of an in-flight HGMMA.SP intact (it waits before reusing them) but not
its sparsity metadata register: in session 20's V:2:M codes kernel it reused that register for
address arithmetic and the next stage's loads before the WARPGROUP.DEPBAR that retires the
HGMMA, and the products came out wrong and different from call to call. The kernels now read
each metadata word once more after the wait (keep_metadata in src/cuda/wgmma_primitives.cuh);
this script checks the compiled code for the pattern.

Usage: sass_metadata_hazards.py FILE.sass|OBJECT.o ...   (an object goes through cuobjdump -sass)
Per function: the HGMMA.SP whose metadata register is written by another instruction before the
group is retired (the second following DEPBAR.LE gsb0, 0x1, or a DEPBAR.LE gsb0, 0x0). The scan
follows the instruction stream (not branches), so a hit names a place to read, and a function
without hits is clean along its straight-line code. Exit status 1 when any hit is found.
"""
import re
import subprocess
import sys

INSTR = re.compile(r"/\*[0-9a-f]{4}\*/\s*(.*?)\s*;")
HGMMA = re.compile(r"HGMMA\.SP\S*\s+R\d+,\s*(?:R\d+,\s*)?gdesc\[[^\]]*\](?:\.\w+)*,\s*R\d+,\s*(?:U?P\d+,\s*)?(R\d+)")
DEST = re.compile(r"(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)\s+(R\d+)")


def sass_text(path):
    if path.endswith(".sass") or path.endswith(".txt"):
        with open(path) as f:
            return f.read()
    return subprocess.run(["cuobjdump", "-sass", path], check=True, capture_output=True, text=True).stdout


def hazards(instructions):
    hits, checked = [], 0
    for i, ins in enumerate(instructions):
        m = HGMMA.match(ins)
        if not m:
            continue
        checked += 1
        meta, retired = m.group(1), 0
        for later in instructions[i + 1:]:
            if "DEPBAR.LE gsb0, 0x0" in later:
                break
            if "DEPBAR.LE gsb0, 0x1" in later:
                retired += 1
                if retired == 2:
                    break
            d = DEST.match(later)
            if d and d.group(2) == meta and not d.group(1).startswith(("HGMMA", "ST", "BAR", "SYNCS")):
                hits.append((ins, later))
                break
    return hits, checked


def main(paths):
    found = checked = 0
    for path in paths:
        function, body = None, []
        for line in sass_text(path).splitlines() + ["Function : <end>"]:
            if "Function : " in line:
                if function and body:
                    hits, n = hazards(body)
                    checked += n
                    for ins, later in hits:
                        found += 1
                        print(f"{path}: {function}\n  metadata of   {ins}\n  overwritten by {later}")
                function, body = line.split("Function : ", 1)[1].strip(), []
                continue
            m = INSTR.search(line)
            if m:
                body.append(m.group(1))
    print(f"{found} metadata register hazard(s) in {checked} HGMMA.SP instructions")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
