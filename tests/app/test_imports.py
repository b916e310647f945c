"""The layers' imports (docs/architecture.md): nothing in app/ reaches back for the Box, which
hands each part its few collaborators; provisioning/ and drivers/ never import app/."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Only what starts the service builds a Box (in app/; the demo, in simulators/, does too).
BUILDS_THE_BOX = {"app/cli.py"}


def _imported(path: Path) -> set[str]:
    """Every absolute module a file imports, at any depth (TYPE_CHECKING blocks included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _files(package: str) -> dict[str, set[str]]:
    return {
        str(path.relative_to(ROOT)): _imported(path)
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def test_only_the_entry_points_import_the_box():
    importers = {name for name, imported in _files("app").items() if "app.box" in imported}
    assert importers == BUILDS_THE_BOX


def test_provisioning_and_drivers_never_import_app():
    for package in ("provisioning", "drivers"):
        for name, imported in _files(package).items():
            assert not {m for m in imported if m == "app" or m.startswith("app.")}, name


def test_management_and_the_status_app_import_without_the_box():
    """In a fresh interpreter where importing app.box fails: the circle box -> management ->
    status web -> box would show here."""
    code = (
        "import sys\n"
        "sys.modules['app.box'] = None  # any import of it raises ImportError\n"
        "import app.management, app.status.web, app.status.actions, app.status.source\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
