"""Errors raised while building, checking or reading a DataJAX trace."""

from __future__ import annotations

from collections.abc import Sequence

# How many steps the error shows on each side of the bad one.
_CONTEXT_STEPS = 2


class IRError(ValueError):
    """A trace breaks a rule of the IR.

    The message names the step and, when the steps are known, shows the
    printed IR around the bad step with the bad line marked ``>``.
    """

    def __init__(
        self,
        message: str,
        steps: Sequence[object] | None = None,
        index: int | None = None,
    ) -> None:
        self.message = message
        self.index = index
        text = message
        if steps is not None and index is not None:
            text = f"{message}\n{_context(steps, index)}"
        super().__init__(text)


class TraceFormatError(IRError):
    """A serialized trace cannot be read back (bad kind, field or type)."""


def _context(steps: Sequence[object], index: int) -> str:
    """Print the steps around ``index``, marking the bad one."""
    # imported here: the printer imports the nodes, which import us
    from datajax.ir.printer import format_step

    lo = max(0, index - _CONTEXT_STEPS)
    hi = min(len(steps), index + _CONTEXT_STEPS + 1)
    lines = []
    for i in range(lo, hi):
        mark = ">" if i == index else " "
        try:
            body = format_step(i, steps[i])
        except Exception:  # a broken step must not hide the error
            body = f"t{i} = <unprintable {type(steps[i]).__name__}>"
        lines.append(f"  {mark} {body}")
    return "\n".join(lines)
