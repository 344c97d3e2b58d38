"""Run identity is stable: the hashes of reference configs pinned at reglab 0.1.0 never change, a
field added since then is hashed only away from the value that computes what 0.1.0 computed, and
fields that do not change what is computed are never hashed (the rule in reglab/config.py)."""

from __future__ import annotations

import json
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from reglab import config as config_module
from reglab.config import IDENTITY_DEFAULTS, NON_IDENTITY_FIELDS, RunConfig, config_hash
from reglab.validation import load_config, validate

PINNED = json.loads((Path(__file__).parent / "data" / "run_identity_v1.json").read_text())


def schema_fields(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted field path of a config model; list items are "*"."""
    out = []
    for name, f in model.model_fields.items():
        path = prefix + name
        out.append(path)
        stack = [(f.annotation, path)]
        while stack:
            ann, where = stack.pop()
            origin = typing.get_origin(ann)
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                out += schema_fields(ann, where + ".")
            elif origin is list:
                stack += [(a, where + ".*") for a in typing.get_args(ann)]
            elif origin is not None:
                stack += [(a, where) for a in typing.get_args(ann)]
    return sorted(set(out))


def default_at(path: str):
    """The schema default of a dotted field (list items: their model's default)."""
    model: type[BaseModel] = RunConfig
    parts = path.split(".")
    for i, part in enumerate(parts):
        if part == "*":
            continue
        field = model.model_fields[part]
        if i == len(parts) - 1:
            return field.get_default(call_default_factory=True)
        nested = [
            a
            for a in [field.annotation, *_flat_args(field.annotation)]
            if isinstance(a, type) and issubclass(a, BaseModel)
        ]
        model = nested[0]
    raise AssertionError(path)


def _flat_args(ann) -> list:
    out = []
    for a in typing.get_args(ann):
        out += [a, *_flat_args(a)]
    return out


@pytest.mark.parametrize("ref", PINNED["configs"], ids=lambda r: r["label"])
def test_reference_config_keeps_its_hash(ref):
    assert config_hash(validate(json.loads(json.dumps(ref["config"])))) == ref["hash"]


def test_every_field_added_since_the_pin_has_a_neutral_value():
    new = sorted(set(schema_fields(RunConfig)) - set(PINNED["fields"]))
    # the fields inside a new field (analysis.monitors.*.name) come and go with it
    covered = [*IDENTITY_DEFAULTS, *NON_IDENTITY_FIELDS]
    unregistered = [f for f in new if not any(f == c or f.startswith(c + ".") for c in covered)]
    assert not unregistered, (
        f"new config fields {unregistered} would change every existing run's hash: list each in "
        "reglab.config.IDENTITY_DEFAULTS with the value that computes what was computed before it "
        "existed, or in NON_IDENTITY_FIELDS if it does not change what is computed"
    )
    for f, neutral in IDENTITY_DEFAULTS.items():
        assert f not in PINNED["fields"], f"{f} existed at the pin: it is already part of the hashes"
        assert default_at(f) == neutral, f"{f}: its default must be the neutral value {neutral!r}"


def test_no_pinned_field_disappears():
    # Removing or renaming a field changes the canonical form of every config that had it.
    assert set(PINNED["fields"]) <= set(schema_fields(RunConfig))


def test_a_new_field_is_hashed_only_away_from_its_neutral_value(monkeypatch):
    # Stand-in for a field added later: train.loss plays the new field, "auto" its neutral value.
    base = load_config(None, ["data.dataset=digits"])
    other = load_config(None, ["data.dataset=digits", "train.loss=mse"])
    before = config_hash(base)
    monkeypatch.setitem(IDENTITY_DEFAULTS, "train.loss", "auto")
    assert "loss" not in config_module.canonical_dict(base)["train"]
    assert config_module.canonical_dict(other)["train"]["loss"] == "mse"
    assert config_hash(base) != before and config_hash(other) != config_hash(base)
    # List items: regularizers.*.roles at its default ["weight"] leaves every item's hash alone.
    regs = load_config(None, ["regularizers=[{name: l2, lam: 0.1}, {name: l2, lam: 0.2, roles: [weight, bias]}]"])
    monkeypatch.setitem(IDENTITY_DEFAULTS, "regularizers.*.roles", ["weight"])
    items = config_module.canonical_dict(regs)["regularizers"]
    assert "roles" not in items[0] and items[1]["roles"] == ["weight", "bias"]


@pytest.mark.parametrize(
    "override",
    ["name=another", "output=/elsewhere", "device=cpu", "data.dir=/some/data", "train.progress=false"],
)
def test_fields_that_do_not_change_the_numbers_are_not_hashed(override):
    assert config_hash(load_config(None, [override])) == config_hash(load_config(None, []))
