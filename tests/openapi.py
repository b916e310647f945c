"""Test helper: OpenAPI 3.0 schema objects as JSON Schema, to validate real answers against
the project's OpenAPI documents (docs/host-api.yaml, docs/status-api.yaml)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import yaml


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


# docs/host-api.yaml: what the box sends and the reference host answers.

HOST_API = yaml.safe_load(
    (Path(__file__).resolve().parents[1] / "docs" / "host-api.yaml").read_text(encoding="utf-8")
)
_HOST_COMPONENTS = json_schema(HOST_API["components"])


def validate_host(instance: Any, schema: dict[str, Any]) -> None:
    root = {**json_schema(schema), "components": _HOST_COMPONENTS}
    jsonschema.Draft202012Validator(root).validate(instance)


def validate_host_named(instance: Any, name: str) -> None:
    validate_host(instance, {"$ref": f"#/components/schemas/{name}"})


def host_request_schema(path: str, method: str = "post") -> dict[str, Any]:
    return HOST_API["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]


def host_response_schema(path: str, method: str, status: int) -> dict[str, Any]:
    responses = HOST_API["paths"][path][method]["responses"]
    assert str(status) in responses or status >= 500, f"{method} {path}: {status} not documented"
    response = responses.get(str(status)) or responses["default"]
    if "$ref" in response:
        response = _lookup(response["$ref"])
    return response["content"]["application/json"]["schema"]


def _lookup(ref: str) -> Any:
    node: Any = HOST_API
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node
