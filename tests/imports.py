"""What a folder of the project imports, read from the source (no import runs): the layering
checks (drivers/ and provisioning/ never import app/; nothing in the box imports the
simulators) all read it the same way."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def static_imports(folder: str) -> Iterator[tuple[str, str]]:
    """(file relative to the checkout, module) for every absolute import under `folder`."""
    for path in sorted((ROOT / folder).rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                yield str(path.relative_to(ROOT)), name


def imports_of(folder: str, *packages: str) -> list[str]:
    """ "file: module" for each import under `folder` of one of `packages` (or their modules)."""
    return [
        f"{path}: {name}" for path, name in static_imports(folder) if name.split(".")[0] in packages
    ]
