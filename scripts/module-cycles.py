#!/usr/bin/env python3
"""Import cycles between the crate's modules.

Builds the module dependency graph of `src/` from `use crate::...`, `crate::`,
`super::`, `self::` and child-module paths (`mod x;` then `x::...`), and reports
every cycle between the modules each file belongs to, at every depth: between
layers (`webhook` -> `k8s` -> `webhook`), between the modules of a layer
(`core::policy` -> `core::engine` -> `core::policy`), and between sibling files
(`core::engine::pod` -> `core::engine::validate` -> `core::engine::pod`). A module
using its own parent, or a parent re-exporting its children, is containment,
not a cycle. `#[cfg(test)]` modules are left out: test code may reach anywhere.

Exit status 1 when there is a cycle (CI runs this), 0 otherwise.

Usage: scripts/module-cycles.py [--src DIR] [--graph]
  --graph  also print every edge (module -> module: file:line)
"""

import argparse
import os
import re
import sys
from collections import defaultdict

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def module_of(path, src):
    """Module path (tuple) of a source file; () for lib.rs/main.rs."""
    rel = os.path.relpath(path, src)[: -len(".rs")].split(os.sep)
    if rel[-1] == "mod":
        rel = rel[:-1]
    if rel in (["lib"], ["main"]):
        return ()
    return tuple(rel)


def strip(text):
    """Source without comments, string/char literals and test modules."""
    m = re.search(r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+" + IDENT + r"\s*\{", text)
    if m:
        text = text[: m.start()] + "\n" * text[m.start():].count("\n")
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append("\n" * text[i:j].count("\n"))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            hashes = re.match(r'r(#*)"', text[i:]).group(1)
            end = '"' + hashes
            j = text.find(end, i + 2 + len(hashes))
            j = n if j < 0 else j + len(end)
            out.append('""' + "\n" * text[i:j].count("\n"))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""' + "\n" * text[i:j].count("\n"))
            i = j + 1
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", text[i:]):
            j = i + re.match(r"'(\\.[^']*|[^\\'])'", text[i:]).end()
            out.append("' '")
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def use_paths(tree):
    """Expands a use tree (`a::{b, c::d}`) into paths (lists of segments)."""
    tree = re.sub(r"\s+", "", tree)
    paths = []

    def expand(prefix, s):
        # split top-level commas
        parts, depth, cur = [], 0, ""
        for ch in s:
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            if ch == "," and depth == 0:
                parts.append(cur)
                cur = ""
            else:
                cur += ch
        if cur:
            parts.append(cur)
        for p in parts:
            if "{" in p:
                head, rest = p.split("{", 1)
                head = [h for h in head.split("::") if h]
                expand(prefix + head, rest[: rest.rfind("}")])
            else:
                p = re.sub(r"\bas\b.*$", "", p)
                paths.append(prefix + [h for h in p.split("::") if h])

    expand([], tree)
    return paths


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--src", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
    ap.add_argument("--graph", action="store_true")
    args = ap.parse_args()
    src = os.path.normpath(args.src)

    files = {}
    for root, _, names in os.walk(src):
        for name in names:
            if name.endswith(".rs"):
                path = os.path.join(root, name)
                files[path] = module_of(path, src)
    if os.path.join(src, "main.rs") in files:
        del files[os.path.join(src, "main.rs")]  # the binary: a separate crate
    modules = set(files.values())

    def resolve(segments):
        """Deepest module named by a path of segments."""
        best = None
        for k in range(1, len(segments) + 1):
            if tuple(segments[:k]) in modules:
                best = tuple(segments[:k])
        return best

    edges = defaultdict(list)  # (from, to) -> [file:line]
    for path, mod in sorted(files.items()):
        raw = open(path, encoding="utf-8").read()
        text = strip(raw)
        children = set(re.findall(r"^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(" + IDENT + r")\s*;", text, re.M))

        def absolute(segs):
            segs = list(segs)
            if not segs:
                return None
            if segs[0] == "crate":
                return segs[1:]
            if segs[0] == "self":
                return list(mod) + segs[1:]
            if segs[0] == "super":
                base = list(mod)
                while segs and segs[0] == "super":
                    base = base[:-1]
                    segs = segs[1:]
                return base + segs
            if segs[0] in children:
                return list(mod) + segs
            return None

        refs = []  # (segments, line)
        for m in re.finditer(r"\buse\s+((?:crate|super|self|" + IDENT + r")(?:::[^;]*)?);", text):
            line = text.count("\n", 0, m.start()) + 1
            for p in use_paths(m.group(1)):
                refs.append((p, line))
        for m in re.finditer(r"(?<![:\w])((?:crate|super|self|" + IDENT + r")(?:::" + IDENT + r")+)", text):
            line = text.count("\n", 0, m.start()) + 1
            refs.append((m.group(1).split("::"), line))
        for segs, line in refs:
            target = absolute(segs)
            if target is None:
                continue
            to = resolve(target)
            if to is None or to == mod:
                continue
            # A parent declaring its child is containment, not a dependency.
            edges[(mod, to)].append(f"{os.path.relpath(path, os.path.dirname(src))}:{line}")

    def name(m):
        return "::".join(m) if m else "crate"

    def sccs(nodes, succ):
        index, low, stack, on, out = {}, {}, [], set(), []
        counter = [0]

        def visit(v):
            index[v] = low[v] = counter[0]
            counter[0] += 1
            stack.append(v)
            on.add(v)
            for w in succ.get(v, ()):
                if w not in index:
                    visit(w)
                    low[v] = min(low[v], low[w])
                elif w in on:
                    low[v] = min(low[v], index[w])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))

        sys.setrecursionlimit(10000)
        for v in sorted(nodes):
            if v not in index:
                visit(v)
        return out

    if args.graph:
        for (a, b), where in sorted(edges.items()):
            print(f"{name(a)} -> {name(b)}: {', '.join(where[:3])}")

    depth = max((len(m) for m in modules), default=0)
    found = False
    for level in range(1, depth + 1):
        cut = lambda m, k=level: m[:k]  # noqa: E731
        succ, why = defaultdict(set), defaultdict(list)
        nodes = {cut(m) for m in modules}
        for (a, b), where in edges.items():
            ca, cb = cut(a), cut(b)
            # Inside one collapsed module, and between a module and its own
            # ancestors (`x::y` -> `x` is the same module at this depth), no edge.
            if ca == cb or cb == ca[: len(cb)] or ca == cb[: len(ca)]:
                continue
            succ[ca].add(cb)
            why[(ca, cb)].extend(where)
        label = f"modules at depth {level}"
        for comp in sccs(nodes, succ):
            found = True
            members = set(comp)
            print(f"cycle between {label}: {' , '.join(name(m) for m in comp)}")
            for a in comp:
                for b in sorted(succ[a]):
                    if b in members:
                        print(f"  {name(a)} -> {name(b)}  ({', '.join(why[(a, b)][:3])})")
    if found:
        return 1
    print(f"no import cycle among {len(modules)} modules")
    return 0


if __name__ == "__main__":
    sys.exit(main())
