#!/usr/bin/env python3
"""Fails when a module of controller/src uses a module on a floor above its own, or a sibling
on its own floor. The floors are written down once, in controller/layers.txt (read its header).

What counts as a use: every path that starts with `crate::` (in `use` declarations, with
their `{...}` groups, and in code), every path through a module a `use crate::...` brought
into scope, and every `super::` path. Comments and string literals are ignored. Test modules
are checked like the rest.

Usage: hack/check-layers.py [REPO]      (REPO defaults to the repository this file is in)
       hack/check-layers.py --self-test (proves the check reports each kind of violation)
"""

import re
import sys
import tempfile
from pathlib import Path

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def read_floors(path):
    """The floors, bottom first: a list of lists of entries (tuples of module names)."""
    floors = []
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            floors.append([tuple(entry.split("::")) for entry in line.split()])
    floors.reverse()
    return floors


def strip_comments_and_strings(text):
    """The source with comments, string and char literals blanked out (newlines kept)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    out.append("\n" if text[i] == "\n" else "")
                    i += 1
        elif c == "r" and re.match(r'r#*"', text[i:]):
            hashes = re.match(r'r(#*)"', text[i:]).group(1)
            end = text.find('"' + hashes, i + 2 + len(hashes))
            segment = text[i : (n if end < 0 else end + 1 + len(hashes))]
            out.append('""' + "\n" * segment.count("\n"))
            i += len(segment)
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""' + "\n" * text[i:j].count("\n"))
            i = j + 1
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", text[i : i + 4]):
            m = re.match(r"'(\\.|[^\\'])'", text[i : i + 4])
            out.append("' '")
            i += len(m.group(0))
        else:
            out.append(c)
            i += 1
    return "".join(out)


def module_of(src_dir, path):
    """The module path of a source file, as a tuple (() for lib.rs)."""
    parts = list(path.relative_to(src_dir).with_suffix("").parts)
    if parts[-1] in ("mod", "lib"):
        parts.pop()
    return tuple(parts)


def use_trees(code):
    """Yields every path a `use` declaration names, as lists of segments, groups expanded."""
    for m in re.finditer(r"\buse\s+([^;]*);", code):
        yield from expand(m.group(1).replace(" ", "").replace("\n", ""))


def expand(tree, prefix=()):
    """`a::{b,c::{d}}` -> [a,b], [a,c,d]."""
    depth, start, items = 0, 0, []
    for i, c in enumerate(tree):
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        elif c == "," and depth == 0:
            items.append(tree[start:i])
            start = i + 1
    items.append(tree[start:])
    for item in filter(None, items):
        if "{" in item:
            head, rest = item.split("{", 1)
            yield from expand(rest[: rest.rindex("}")], prefix + tuple(filter(None, head.split("::"))))
        else:
            path = re.split(r"\bas\b", item)[0]
            yield list(prefix + tuple(filter(None, path.split("::"))))


def uses_of(module, code, crate_aliases):
    """The crate module paths a module's code uses (each a tuple of names)."""
    found = set()
    scoped = {}  # a name a `use crate::...` brought into scope -> the path it stands for
    for path in use_trees(code):
        full = resolve(module, path, crate_aliases)
        if full is not None:
            found.add(full)
            scoped[path[-1]] = full
    for m in re.finditer(rf"\b(crate|super|self)((?:::{IDENT})+)", code):
        full = resolve(module, [m.group(1)] + m.group(2).strip(":").split("::"), crate_aliases)
        if full is not None:
            found.add(full)
    for name, full in scoped.items():
        for m in re.finditer(rf"(?<![:\w]){re.escape(name)}((?:::{IDENT})+)", code):
            found.add(full + tuple(m.group(1).strip(":").split("::")))
    return found


def resolve(module, path, crate_aliases):
    """A path as seen from `module`, made absolute within the crate; None if outside it."""
    if not path:
        return None
    if path[0] == "crate":
        rest = path[1:]
        if rest and rest[0] in crate_aliases:
            return crate_aliases[rest[0]]
        return tuple(rest)
    if path[0] in ("super", "self"):
        at = list(module)
        while path and path[0] in ("super", "self"):
            if path[0] == "super":
                if not at:
                    return None
                at.pop()
            path = path[1:]
        return tuple(at) + tuple(path)
    return None


def entry_of(path, floors):
    """(floor index, entry) of the longest entry prefixing `path`, or None."""
    best = None
    for level, entries in enumerate(floors):
        for entry in entries:
            if path[: len(entry)] == entry and (best is None or len(entry) > len(best[1])):
                best = (level, entry)
    return best


def check(repo):
    repo = Path(repo)
    src = repo / "controller" / "src"
    floors = read_floors(repo / "controller" / "layers.txt")
    lib = strip_comments_and_strings((src / "lib.rs").read_text())
    modules = set(re.findall(rf"\bpub mod ({IDENT});", lib))
    # `pub use api::{Tenant, ...}` in lib.rs: crate::Tenant is the api module's.
    crate_aliases = {}
    for path in use_trees(lib):
        if path and path[0] in modules and len(path) > 1:
            crate_aliases[path[-1]] = (path[0],)
    problems = []
    for module_name in sorted(modules):
        if entry_of((module_name,), floors) is None:
            problems.append(f"controller/src: module {module_name} is on no floor of controller/layers.txt")
    for path in sorted(src.rglob("*.rs")):
        module = module_of(src, path)
        if module in ((), ("main",)):
            continue
        home = entry_of(module, floors)
        if home is None:
            continue  # reported above for its top-level module
        code = strip_comments_and_strings(path.read_text())
        for used in sorted(uses_of(module, code, crate_aliases)):
            if not used or used[0] not in modules:
                continue
            target = entry_of(used, floors)
            if target is None or target[1] == home[1]:
                continue
            if home[1][: len(target[1])] == target[1] and len(target[1]) < len(home[1]):
                continue  # a module may use the entry it is inside (its own parent)
            name = "::".join(used)
            if target[0] > home[0]:
                problems.append(
                    f"{path.relative_to(repo)}: {'::'.join(module)} ({'::'.join(home[1])}) uses {name}, "
                    f"on a floor above ({'::'.join(target[1])})"
                )
            elif target[0] == home[0]:
                problems.append(
                    f"{path.relative_to(repo)}: {'::'.join(module)} ({'::'.join(home[1])}) uses {name}, "
                    f"a sibling on its own floor ({'::'.join(target[1])})"
                )
    return problems


def self_test():
    """Builds a small crate with one violation of each kind, and a clean one."""
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        src = repo / "controller" / "src"
        (src / "low").mkdir(parents=True)
        (repo / "controller" / "layers.txt").write_text("# top first\ntop\nleft right\nlow\n")
        files = {
            "lib.rs": "pub mod top;\npub mod left;\npub mod right;\npub mod low;\npub mod stray;\npub use low::Thing;\n",
            "top.rs": "use crate::{left::A, low};\nfn f() { low::deep::g(); }\n",
            "left.rs": "// use crate::top; in a comment is fine\nconst S: &str = \"crate::top\";\nuse crate::low::Thing;\n",
            "right.rs": "use crate::{left::A};\n",
            "low/mod.rs": "pub mod deep;\nfn f() { crate::Thing::new(); let _ = super::top::X; }\n",
            "low/deep.rs": "use super::super::right::B;\nuse super::Thing;\n",
            "stray.rs": "",
        }
        for name, text in files.items():
            (src / name).write_text(text)
        problems = check(repo)
        expected = [
            "module stray is on no floor",
            "low/mod.rs: low (low) uses top::X, on a floor above (top)",
            "low/deep.rs: low::deep (low) uses right::B, on a floor above (right)",
            "right.rs: right (right) uses left::A, a sibling on its own floor (left)",
        ]
        missing = [e for e in expected if not any(e in p for p in problems)]
        unexpected = [p for p in problems if not any(e in p for e in expected)]
        print("self-test: the broken tree's problems, as reported:")
        for p in problems:
            print(f"  {p}")
        if missing or unexpected:
            print(f"check-layers self-test FAILED: missing {missing}, unexpected {unexpected}", file=sys.stderr)
            return 1
        (src / "right.rs").write_text("use crate::low::Thing;\n")
        (src / "low" / "mod.rs").write_text("pub mod deep;\n")
        (src / "low" / "deep.rs").write_text("use super::Thing;\n")
        (repo / "controller" / "layers.txt").write_text("top\nleft right\nlow stray\n")
        if check(repo):
            print(f"check-layers self-test FAILED: a clean tree reported {check(repo)}", file=sys.stderr)
            return 1
        print("check-layers self-test: every kind of violation reported, a clean tree passes", flush=True)
        return 0


def main():
    if sys.argv[1:] == ["--self-test"]:
        return self_test()
    repo = sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent
    problems = check(repo)
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        print(f"check-layers: {len(problems)} uses against controller/layers.txt", file=sys.stderr)
        return 1
    print("check-layers: every module uses only its own entry and the floors below it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
