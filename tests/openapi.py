"""Test helper: OpenAPI 3.0 schema objects as JSON Schema, to validate real answers against
the project's OpenAPI documents (docs/host-api.yaml, docs/status-api.yaml)."""

from __future__ import annotations

from typing import Any


def json_schema(node: Any) -> Any:
    """`nullable: true` becomes a "null" type (or an anyOf with null); examples are dropped."""
    if isinstance(node, list):
        return [json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: json_schema(v) for k, v in node.items() if k not in ("nullable", "example")}
    if node.get("nullable") is True:
        if "type" in out:
            out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
        if "type" not in out:
            out = {"anyOf": [out, {"type": "null"}]}
    return out
