"""The README's module map ("How it works") names every module of src/spawnwatch and
nothing that is not there, so it cannot drift from the tree."""

from __future__ import annotations

import re

from conftest import REPO

PACKAGE = REPO / "src" / "spawnwatch"
MAP_ROOT = "src/spawnwatch/"
ENTRY = re.compile(r"(?P<indent> *)(?P<name>[A-Za-z_][\w.]*(?:\.py|/))(?:\s|$)")


def mapped_paths(readme: str) -> set[str]:
    """Paths under src/spawnwatch/ the map names, from its indentation (two spaces a level)."""
    lines = readme.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == MAP_ROOT)
    base = len(lines[start]) - len(lines[start].lstrip())
    paths: set[str] = set()
    parents: list[str] = []
    for line in lines[start + 1:]:
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if indent <= base:
            break
        entry = ENTRY.match(line)
        if entry is None or (indent - base) % 2:
            continue  # a description's continuation
        level = (indent - base) // 2 - 1
        if level > len(parents):
            continue
        del parents[level:]
        path = "".join(parents) + entry["name"]
        paths.add(path)
        if path.endswith("/"):
            parents.append(entry["name"])
    return paths


def tree_modules() -> set[str]:
    """Every module and package of src/spawnwatch; a package stands for its __init__.py."""
    found = set()
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE)
        if "__pycache__" in relative.parts or relative.parts[0] == "data":
            continue
        found.add(f"{relative.parent.as_posix()}/" if path.name == "__init__.py" else relative.as_posix())
    found.discard("./")
    return found


def test_module_map_lists_every_module_and_only_real_ones() -> None:
    listed = mapped_paths((REPO / "README.md").read_text())
    missing = tree_modules() - listed
    assert not missing, f"add to the README's module map: {sorted(missing)}"
    absent = sorted(path for path in listed if not (PACKAGE / path).exists())
    assert not absent, f"the README's module map names what src/spawnwatch does not have: {absent}"
