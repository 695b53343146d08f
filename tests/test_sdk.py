"""The SDK internals temporal-saga relies on (``temporal_saga._sdk``) still have the
shape it expects, in the installed ``temporalio``: an upgrade that changes one fails
here, naming it, rather than in a saga."""

from __future__ import annotations

import re
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import pytest

from temporal_saga import _sdk


@pytest.mark.parametrize("name", sorted(_sdk.INTERNALS))
def test_each_sdk_internal_still_has_the_shape_the_shim_expects(name: str) -> None:
    probe: Callable[[], None] = _sdk.INTERNALS[name]
    try:
        probe()
    except Exception as err:
        pytest.fail(
            f"temporalio {version('temporalio')} changed {name}, which "
            f"temporal_saga/_sdk.py relies on: {type(err).__name__}: {err}"
        )


def test_no_module_but_the_shim_reaches_into_the_sdk() -> None:
    """Every use of an SDK internal goes through the shim, so the probes cover them."""
    package = Path(_sdk.__file__).parent
    internal = re.compile(r"\b(workflow|activity)\._[A-Z]|\._client\b")
    found = [
        f"{path.relative_to(package)}:{number}: {line.strip()}"
        for path in sorted(package.rglob("*.py"))
        if path.name != "_sdk.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if internal.search(line)
    ]
    assert found == []
