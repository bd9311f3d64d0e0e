"""The pydantic models and the CRDs in crds/ describe the same objects: same field names,
same nesting, same required sets. A field added to one and not the other fails here."""

import types
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from vmdhcp.api import IPPool, VirtualMachineNetworkConfig

CRDS = Path(__file__).resolve().parents[3] / "crds"


def crd_schema(plural: str) -> dict[str, Any]:
    (path,) = CRDS.glob(f"*_{plural}.yaml")
    crd = yaml.safe_load(path.read_text())
    (version,) = crd["spec"]["versions"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def unwrap(annotation: Any) -> Any:
    """Strip Optional[...] and return the remaining type."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        assert len(args) == 1, annotation
        return unwrap(args[0])
    return annotation


def compare(model: Any, schema: dict[str, Any], path: str, problems: list[str]) -> None:
    model = unwrap(model)
    origin = typing.get_origin(model)
    if origin is list:
        if schema.get("type") != "array":
            problems.append(f"{path}: model has a list, CRD has {schema.get('type')}")
            return
        compare(typing.get_args(model)[0], schema["items"], f"{path}[]", problems)
        return
    if origin is dict:
        if "additionalProperties" not in schema:
            problems.append(f"{path}: model has a map, CRD has no additionalProperties")
        return
    if isinstance(model, type) and issubclass(model, BaseModel):
        if schema.get("type") != "object" or "properties" not in schema:
            problems.append(f"{path}: model has an object, CRD has {schema.get('type')}")
            return
        fields = {(f.alias or name): f for name, f in model.model_fields.items()}
        crd_props = schema["properties"]
        for name in sorted(set(fields) ^ set(crd_props)):
            where = "model" if name in fields else "CRD"
            problems.append(f"{path}.{name}: only in the {where}")
        model_required = {name for name, f in fields.items() if f.is_required()}
        crd_required = set(schema.get("required", []))
        if model_required != crd_required:
            problems.append(
                f"{path}: required differs, model {sorted(model_required)} "
                f"CRD {sorted(crd_required)}"
            )
        for name in sorted(set(fields) & set(crd_props)):
            compare(fields[name].annotation, crd_props[name], f"{path}.{name}", problems)
        return
    scalar = {str: "string", int: "integer", bool: "boolean"}
    expected = scalar.get(model)
    if expected is None:  # datetime
        expected = "string"
    if schema.get("type") != expected:
        problems.append(f"{path}: model {model}, CRD type {schema.get('type')}")


@pytest.mark.parametrize(
    ("model", "plural"),
    [(IPPool, "ippools"), (VirtualMachineNetworkConfig, "virtualmachinenetworkconfigs")],
)
def test_model_and_crd_agree(model: type[BaseModel], plural: str) -> None:
    schema = crd_schema(plural)
    problems: list[str] = []
    for part in ("spec", "status"):
        annotation = model.model_fields[part].annotation
        compare(annotation, schema["properties"][part], part, problems)
    assert problems == []


def walk(schema: dict[str, Any], path: str) -> typing.Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from walk(sub, f"{path}.{name}")
    if "items" in schema:
        yield from walk(schema["items"], f"{path}[]")


@pytest.mark.parametrize("plural", ["ippools", "virtualmachinenetworkconfigs"])
def test_every_crd_field_is_described(plural: str) -> None:
    schema = crd_schema(plural)
    undescribed = [
        path
        for part in ("spec", "status")
        for path, sub in walk(schema["properties"][part], part)
        if not sub.get("description") and not path.endswith("[]")
    ]
    assert undescribed == []


def test_the_comparison_catches_a_missing_field() -> None:
    schema = crd_schema("ippools")
    del schema["properties"]["spec"]["properties"]["ipv4Config"]["properties"]["leaseTime"]
    problems: list[str] = []
    compare(IPPool.model_fields["spec"].annotation, schema["properties"]["spec"], "spec", problems)
    assert problems == ["spec.ipv4Config.leaseTime: only in the model"]


def test_the_controllers_packaged_crds_are_the_published_ones() -> None:
    packaged = CRDS.parent / "src" / "vmdhcp" / "crds"
    names = sorted(p.name for p in CRDS.glob("*.yaml"))
    assert names == sorted(p.name for p in packaged.glob("*.yaml"))
    for name in names:
        assert (packaged / name).read_bytes() == (CRDS / name).read_bytes(), name
