"""What a head's JSON metadata may hold: a JSON Schema, bounds on its size, and the one-line reason
a head that breaks them is refused.

A head may come from another machine (`train --data` on a GPU host, then `model import`), so its
metadata is data from a stranger: every number is a finite number, every string is bounded, the
prompt set is bounded (a head's prompts are embedded when it is checked), and the whole is small.
The keys imgrank reads (the feature spec, the layers, the calibration, the held-out metrics the
page and the report show) have exact types and ranges; any other key is allowed, for heads from
newer versions, but only as bounded plain JSON.
"""

from __future__ import annotations

import json
import re

MAX_META_BYTES = 1 << 20  # a real head's metadata is a few kB; the prompt set is the biggest part
MAX_PROMPTS = 1000  # imgrank's own prompts.txt has 30
MAX_PROMPT_CHARS = 500
MAX_STRING = 4000  # any other string (warnings, file names in counts, recipes)
MAX_ITEMS = 10_000  # items of any array, keys of any object
MAX_DEPTH = 16
MAX_DIM = 1 << 15  # widest image or name vector a head may claim

_BOUNDED = {  # any JSON value, with bounded strings, arrays and objects (numbers are finite: see parse)
    "anyOf": [
        {"type": ["number", "boolean", "null"]},
        {"type": "string", "maxLength": MAX_STRING},
        {"type": "array", "maxItems": MAX_ITEMS, "items": {"$ref": "#/$defs/bounded"}},
        {
            "type": "object",
            "maxProperties": MAX_ITEMS,
            "propertyNames": {"maxLength": 200},
            "additionalProperties": {"$ref": "#/$defs/bounded"},
        },
    ]
}
_COUNT = {"type": "integer", "minimum": 0}
_SHARE = {"type": ["number", "null"], "minimum": 0, "maximum": 1}
_ROW = {"type": "object", "required": ["keep", "delete"], "properties": {"keep": _COUNT, "delete": _COUNT}}
_EVALUATION = {  # evaluation.evaluate(): what the metrics tab, the report and activation read
    "type": "object",
    "properties": {
        "n": _COUNT,
        "ap": _SHARE,
        "roc_auc": _SHARE,
        "chance_ap": _SHARE,
        "precision_at_10": _SHARE,
        "precision_at_50": _SHARE,
        "recipe": {"type": "string", "maxLength": 40},
        "confusion": {
            "type": "object",
            "required": ["keep", "delete"],
            "properties": {"keep": _ROW, "delete": _ROW},
        },
    },
    "additionalProperties": {"$ref": "#/$defs/bounded"},
}
_PROMPTS = {
    "type": "object",
    "required": ["texts", "delete", "weights", "cues", "scale"],
    "properties": {
        "texts": {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_PROMPTS,
            "items": {"type": "string", "minLength": 1, "maxLength": MAX_PROMPT_CHARS},
        },
        "delete": {"type": "array", "maxItems": MAX_PROMPTS, "items": {"type": "boolean"}},
        "weights": {
            "type": "array",
            "maxItems": MAX_PROMPTS,
            "items": {"type": "number", "exclusiveMinimum": 0},
        },
        "cues": {"type": "object", "maxProperties": 16, "additionalProperties": {"type": "number"}},
        "scale": {"type": "number"},
    },
    "additionalProperties": {"$ref": "#/$defs/bounded"},
}
_SPEC = {
    "type": "object",
    "required": ["embed_model", "image_dim", "name_dim", "meta"],
    "properties": {
        "embed_model": {"type": "string", "minLength": 1, "maxLength": 500},
        "image_dim": {"type": "integer", "minimum": 1, "maximum": MAX_DIM},
        "name_dim": {"type": "integer", "minimum": 0, "maximum": MAX_DIM},
        "meta": {"type": "array", "maxItems": 16, "items": {"type": "string", "maxLength": 40}},
        "prior": {
            "type": ["object", "null"],
            "properties": {
                "features": {"type": "array", "maxItems": 16, "items": {"type": "string", "maxLength": 40}},
                "prompts": _PROMPTS,
            },
            "additionalProperties": {"$ref": "#/$defs/bounded"},
        },
    },
    "additionalProperties": {"$ref": "#/$defs/bounded"},
}
SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$defs": {"bounded": _BOUNDED},
    "type": "object",
    "required": ["format", "feature_spec", "n_layers"],
    "properties": {
        "format": {"type": "string", "maxLength": 40},
        "feature_spec": _SPEC,
        "n_layers": {"type": "integer", "minimum": 1, "maximum": 64},
        # k-means centres the head holds (`centroids`, k x image_dim): 0 or absent, none
        "contrast": {"type": "integer", "minimum": 0, "maximum": 4096},
        "calibration": {
            "type": ["object", "null"],
            "required": ["a", "b"],
            "properties": {"a": {"type": "number", "exclusiveMinimum": 0}, "b": {"type": "number"}},
            "additionalProperties": {"$ref": "#/$defs/bounded"},
        },
        "metrics": {
            "type": "object",
            "properties": {
                "active": _EVALUATION,
                "mlp": _EVALUATION,
                "baseline": _EVALUATION,
                "prior_features": {
                    "type": "object",
                    "properties": {"used": {"type": "boolean"}},
                    "additionalProperties": {"$ref": "#/$defs/bounded"},
                },
            },
            "additionalProperties": {"$ref": "#/$defs/bounded"},
        },
        "counts": {"type": "object", "additionalProperties": {"$ref": "#/$defs/bounded"}},
        "config": {"type": "object", "additionalProperties": {"$ref": "#/$defs/bounded"}},
        "warnings": {"type": "array", "maxItems": 1000, "items": {"type": "string", "maxLength": MAX_STRING}},
        "run_id": {"type": "integer"},
    },
    "additionalProperties": {"$ref": "#/$defs/bounded"},
}


def _not_finite(word: str):
    raise ValueError(f"{word} is not a number JSON allows")


def parse(raw: str | bytes) -> tuple[object, str | None]:
    """(the metadata, None), or (None, why it is refused): too big, not JSON, NaN or infinite numbers,
    too deeply nested, or against SCHEMA."""
    if len(raw) > MAX_META_BYTES:
        return None, f"its metadata is {len(raw):,} bytes, more than the {MAX_META_BYTES:,} a head may carry"
    deep = f"its metadata is nested more than {MAX_DEPTH} deep"
    try:
        meta = json.loads(raw, parse_constant=_not_finite)
    except RecursionError:
        return None, deep
    except ValueError:
        return None, "its metadata is not JSON with finite numbers"
    if _depth(meta) > MAX_DEPTH:
        return None, deep
    return meta, problem(meta)


def _depth(value) -> int:
    """How deeply a parsed JSON value nests (iterative: a hostile one cannot exhaust the stack)."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        v, d = todo.pop()
        deepest = max(deepest, d)
        if d <= MAX_DEPTH and isinstance(v, (list, dict)):
            todo.extend((x, d + 1) for x in (v.values() if isinstance(v, dict) else v))
    return deepest


def problem(meta) -> str | None:
    """Where the metadata breaks SCHEMA and how, in one line of plain words; None when it fits."""
    import jsonschema

    if not isinstance(meta, dict):
        return "its metadata is not a JSON object"
    error = jsonschema.exceptions.best_match(_validator().iter_errors(meta))
    if error is None:
        return None
    where = ".".join(_tame(p) for p in error.absolute_path)
    if error.validator == "required":
        missing = [k for k in error.validator_value if k not in error.instance]
        return f"{where + '.' if where else ''}{missing[0]} is missing"
    return f"{where or 'the metadata'} {_rule(error.validator, error.validator_value)}"


def _tame(key) -> str:
    """A key name from the head, shown without markup or control characters, and short."""
    return re.sub(r"[^A-Za-z0-9_\-]", "?", str(key))[:60]


def _rule(validator: str, value) -> str:
    """A schema rule in words, without echoing the offending value (it may be huge, or markup)."""
    words = {
        "type": lambda v: "must be " + " or ".join([v] if isinstance(v, str) else v),
        "maxLength": lambda v: f"must be at most {v} characters",
        "minLength": lambda v: f"must be at least {v} characters",
        "maxItems": lambda v: f"must have at most {v} items",
        "minItems": lambda v: f"must have at least {v} items",
        "maxProperties": lambda v: f"must have at most {v} keys",
        "minimum": lambda v: f"must be at least {v}",
        "maximum": lambda v: f"must be at most {v}",
        "exclusiveMinimum": lambda v: f"must be more than {v}",
        "propertyNames": lambda v: "has a key name that is too long",
        "anyOf": lambda v: "must be plain JSON of bounded size",
    }
    return words.get(validator, lambda v: f"breaks the rule {validator}")(value)


_VALIDATOR = None


def _validator():
    global _VALIDATOR
    if _VALIDATOR is None:
        import jsonschema

        _VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
    return _VALIDATOR
