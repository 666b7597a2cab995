"""KubeRay custom resources against the CRDs' openAPIV3Schema, the way the API server sees them."""

from __future__ import annotations

import copy
import functools
import json

import jsonschema

from deploy_checks.files import KUBERAY_CRDS, KUBERAY_VERSION, load_yaml_docs


def _structural(node, path: str = ""):
    """An openAPIV3Schema node as JSON Schema that rejects unknown fields as `kubectl apply` does.

    The API server drops (and with field validation, rejects) every field that a structural
    schema does not list, unless the node says x-kubernetes-preserve-unknown-fields.
    """
    if isinstance(node, list):
        return [_structural(n, path) for n in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {k: _structural(v, f"{path}.{k}") for k, v in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
            out[key] = _structural(value, f"{path}[]" if key == "items" else path)
        elif key in ("anyOf", "allOf", "oneOf"):
            out[key] = _structural(value, path)
        else:
            out[key] = value
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    is_object = out.get("type") == "object" or "properties" in out
    if is_object and "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def _list_type(validator, list_type, instance, schema):
    """x-kubernetes-list-type: 'set' items are unique; 'map' items are unique by their keys."""
    if not validator.is_type(instance, "array"):
        return
    if list_type == "set":
        seen = [json.dumps(i, sort_keys=True) for i in instance]
        if len(set(seen)) != len(seen):
            yield jsonschema.ValidationError(f"duplicate items in a list of type set: {instance}")
    elif list_type == "map":
        keys = schema.get("x-kubernetes-list-map-keys", [])
        props = (schema.get("items") or {}).get("properties", {})
        seen = set()
        for item in instance:
            if not isinstance(item, dict):
                continue
            key = tuple(item.get(k, props.get(k, {}).get("default")) for k in keys)
            if key in seen:
                yield jsonschema.ValidationError(f"two items share the map keys {dict(zip(keys, key))}")
            seen.add(key)


def _cel(validator, rules, instance, schema):
    """CEL rules (x-kubernetes-validations) are not evaluated here: a manifest must not set such a field."""
    yield jsonschema.ValidationError(
        "sets a field that carries CEL rules, which these tests do not evaluate: "
        + "; ".join(r.get("rule", "") for r in rules)
    )


_CRDValidator = jsonschema.validators.extend(
    jsonschema.Draft4Validator,  # OpenAPI v3.0 schemas follow draft 4's keywords
    {"x-kubernetes-list-type": _list_type, "x-kubernetes-validations": _cel},
)


@functools.cache
def crd_validators() -> dict[tuple[str, str], jsonschema.protocols.Validator]:
    """(apiVersion, kind) -> validator for every served version of the vendored KubeRay CRDs."""
    out = {}
    for path in sorted(KUBERAY_CRDS.glob("*.yaml")):
        for crd in load_yaml_docs(path):
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                if not version.get("served"):
                    continue
                schema = _structural(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
                # The API server validates metadata as ObjectMeta itself (see metadata_problems).
                schema["properties"]["metadata"] = {"type": "object"}
                out[(f"{group}/{version['name']}", kind)] = _CRDValidator(schema)
    return out


def _errors(validator, instance) -> list[str]:
    problems = []
    for err in sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path)):
        where = ".".join(str(p) for p in err.absolute_path) or "(top)"
        problems.append(f"{where}: {err.message}")
    return problems


def kuberay_problems(doc: dict) -> list[str]:
    """A KubeRay resource against its CRD (KubeRay KUBERAY_VERSION), unknown fields rejected."""
    validator = crd_validators().get((doc.get("apiVersion"), doc.get("kind")))
    if validator is None:
        return [f"{doc.get('apiVersion')} {doc.get('kind')} is not a served kind of KubeRay {KUBERAY_VERSION}'s CRDs"]
    return _errors(validator, doc)
