"""Steps that come and go with code changes: ``since=`` and ``until=`` of ``Saga.step``.

Both take a patch id (``workflow.patched``), or ``deprecated_patch(patch_id)`` once the
sagas from before the change are gone. The life cycle of an added step:

1. ``since="X"``: sagas that reach the step on the new code run it (the history
   records the patch); those whose history passed that point replay without it.
2. ``since=deprecated_patch("X")``: every saga runs it; histories from step 1 still replay.
3. no ``since``: once no saga from step 1 remains.

``until`` retires a step the same way (present before the change, absent after).
"""

from __future__ import annotations

from dataclasses import dataclass

from temporalio import workflow

from ._errors import SagaTypeError


@dataclass(frozen=True)
class DeprecatedPatch:
    """A patch whose old code path is gone (see :func:`deprecated_patch`)."""

    patch_id: str


def deprecated_patch(patch_id: str) -> DeprecatedPatch:
    """A step's patch, deprecated: ``since=deprecated_patch("X")``, ``until=deprecated_patch("X")``.

    Use it once no saga that started before the patch can still replay: the step is
    then always present (``since``) or always absent (``until``), and the histories
    written since the patch (which record it) still replay. Remove it, with
    ``since=``/``until=``, once those are gone too.
    """
    if not isinstance(patch_id, str) or not patch_id:
        raise SagaTypeError(f"deprecated_patch() takes a patch id, not {patch_id!r}")
    return DeprecatedPatch(patch_id)


Patch = str | DeprecatedPatch
"""What ``since=`` and ``until=`` take."""


def check_patch(patch: object) -> bool:
    """Whether ``patch`` is a patch id or a deprecated one."""
    return (isinstance(patch, str) and bool(patch)) or isinstance(patch, DeprecatedPatch)


def _patched(patch: Patch) -> bool:
    if isinstance(patch, DeprecatedPatch):
        workflow.deprecate_patch(patch.patch_id)
        return True
    return workflow.patched(patch)


def in_this_version(since: Patch | None, until: Patch | None) -> bool:
    """Whether this saga runs a step with these ``since=`` and ``until=``.

    Called once, when the step is due: ``workflow.patched`` records the decision in
    the history (a marker), and a replay reads it back from there.
    """
    if since is not None and not _patched(since):
        return False
    return until is None or not _patched(until)
