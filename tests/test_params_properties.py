"""Property-based tests of the params parser: whatever mapping it is given, it either returns Params or
raises ParamsError naming a key; never another exception, never a silent pass of a bad value."""

from __future__ import annotations

import copy
import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from anime_avatar.core.errors import ParamsError
from anime_avatar.core.params import Params, parse_params
from tests.test_params import RAW

# What YAML can hold: scalars of every kind, lists and mappings with any scalar keys.
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
YAML_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(SCALARS.filter(lambda k: k == k), inner, max_size=4),
    max_leaves=12,
)


def paths(tree: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every key path of the nested mappings of ``tree`` (lists are leaves)."""
    found = []
    for key, value in tree.items():
        found.append((*prefix, key))
        if isinstance(value, dict):
            found += paths(value, (*prefix, key))
    return found


KEY_PATHS = paths(RAW)


def parse(raw: Any) -> Params | ParamsError:
    try:
        return parse_params(raw, "params.yaml")
    except ParamsError as err:  # any other exception fails the test
        return err


@settings(max_examples=300, deadline=None)
@given(raw=YAML_VALUES)
def test_any_yaml_value_parses_or_raises_params_error(raw):
    result = parse(raw)
    assert isinstance(result, ParamsError), "no random value is a complete params file"
    assert str(result).startswith("params.yaml: ")


@settings(max_examples=400, deadline=None)
@given(path=st.sampled_from(KEY_PATHS), value=YAML_VALUES, action=st.sampled_from(["replace", "delete", "add"]))
def test_one_changed_key_parses_or_is_named_in_the_error(path, value, action):
    raw = copy.deepcopy(RAW)
    parent = raw
    for key in path[:-1]:
        parent = parent[key]
    if action == "replace":
        parent[path[-1]] = value
    elif action == "delete":
        del parent[path[-1]]
    else:
        path = (*path[:-1], "no_such_key")
        parent["no_such_key"] = value
    result = parse(raw)
    dotted = ".".join(path).replace("validate_", "validate")
    if isinstance(result, Params):
        assert action == "replace", f"{action} of {dotted} must fail"
        assert_finite(result)
        return
    message = str(result)
    assert message.startswith("params.yaml: ")
    # The message names the key that was changed (or, for a list or mapping put in its place, a key inside it).
    assert dotted in message, message


def assert_finite(params: Params) -> None:
    """No NaN or infinity gets through: a float key with one would train or detect nonsense."""
    stack: list[Any] = [params.model_dump()]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack += item.values()
        elif isinstance(item, list):
            stack += item
        elif isinstance(item, float):
            assert math.isfinite(item), params


def leaf(path: tuple[str, ...]) -> Any:
    value: Any = RAW
    for key in path:
        value = value[key]
    return value


NUMBER_PATHS = [path for path in KEY_PATHS if type(leaf(path)) in (int, float)]


@settings(max_examples=300, deadline=None)
@given(
    path=st.sampled_from(NUMBER_PATHS),
    value=st.sampled_from([math.inf, -math.inf, math.nan]) | st.floats() | st.integers(),
)
def test_any_number_in_a_number_key_parses_finite_or_is_named(path, value):
    raw = copy.deepcopy(RAW)
    parent = raw
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    result = parse(raw)
    if isinstance(result, Params):
        assert_finite(result)
    else:
        assert ".".join(path) in str(result), str(result)
