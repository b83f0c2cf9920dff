#!/usr/bin/env python3
"""Shape guards of issue 17 that cargo cannot check (run by scripts/test):

* no import circle between the top-level modules of a daemon crate (root, cluster, node): a
  module that names `crate::x` depends on `x`; test code and doc comments do not count;
* no source file longer than MAX_LINES outside test code (`#[cfg(test)] mod tests` at the end
  of a file, `tests.rs` files, `tests/`, `benches/`, `examples/`, and the store's conformance
  suite, which is test code behind the `testing` feature).

Exit status 1 with what is wrong, 0 when the shape holds.
"""

import os
import re
import sys

MAX_LINES = 750  # "about 700"
CIRCLE_FREE = ["daemons/root/src", "daemons/cluster/src", "daemons/node/src"]
# vendor/ holds third-party crates with small marked patches (vendor/README.md): not our shape.
NOT_SOURCE = {"target", "tests", "benches", "examples", ".git", "node_modules", "fixtures", "vendor"}
TEST_FILES = {"tests.rs", "conformance.rs"}
TEST_TAIL = re.compile(r"^#\[cfg\(test\)\]\s*\n(pub(\(crate\))? )?mod tests\b", re.M)


def without_tests(text):
    cut = TEST_TAIL.search(text)
    return text[: cut.start()] if cut else text


def module_graph(src):
    """Top-level module → the top-level modules it names through `crate::`."""
    mods = {}
    for name in os.listdir(src):
        path = os.path.join(src, name)
        if name.endswith(".rs") and name not in ("lib.rs", "main.rs"):
            mods.setdefault(name[:-3], []).append(path)
        elif os.path.isdir(path):
            for d, _, files in os.walk(path):
                mods.setdefault(name, []).extend(
                    os.path.join(d, f) for f in files if f.endswith(".rs") and f != "tests.rs"
                )
    graph = {m: set() for m in mods}
    for m, files in mods.items():
        for f in files:
            with open(f, encoding="utf-8") as fh:
                text = without_tests(fh.read())
            code = "\n".join(l for l in text.split("\n") if not l.lstrip().startswith("//"))
            names = re.findall(r"crate::(\w+)", code)
            for group in re.findall(r"crate::\{([^}]*)\}", code):
                names += re.findall(r"(\w+)", group)
            graph[m].update(n for n in names if n in mods and n != m)
    return graph


def circles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def long_files(root):
    for d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if x not in NOT_SOURCE]
        for f in files:
            if not f.endswith(".rs") or f in TEST_FILES:
                continue
            path = os.path.join(d, f)
            with open(path, encoding="utf-8") as fh:
                n = without_tests(fh.read()).count("\n")
            if n > MAX_LINES:
                yield path, n


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "."
    failed = False
    for src in CIRCLE_FREE:
        graph = module_graph(os.path.join(root, src))
        for c in circles(graph):
            failed = True
            edges = "; ".join(f"{a} -> {', '.join(sorted(graph[a] & set(c)))}" for a in c)
            print(f"error: import circle in {src}: {edges}", file=sys.stderr)
    for path, n in long_files(root):
        failed = True
        print(
            f"error: {os.path.relpath(path, root)} has {n} lines outside its tests "
            f"(at most {MAX_LINES}): split it along a seam",
            file=sys.stderr,
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
