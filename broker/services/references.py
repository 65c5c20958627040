"""Reference checks with ReFrame semantics: ``[value, lower, upper]``, bounds relative to
the value, ``lower`` and ``upper`` optional (node validation, CPU and GPU alike)."""

from __future__ import annotations


def against(key: str, value: float | None, ref: list[float]) -> list[str]:
    """Why ``value`` misses its reference ``[value, lower, upper]`` (ReFrame: bounds
    relative to the value, either optional); empty if it does not."""
    if not ref:
        return []
    if value is None:
        return [f"{key}: not measured"]
    out = []
    target = ref[0]
    lower = ref[1] if len(ref) > 1 else None
    upper = ref[2] if len(ref) > 2 else None
    if lower is not None and value < target * (1 + lower):
        out.append(
            f"{key} {value:.3g} below {target * (1 + lower):.3g} "
            f"(reference {target:g}, lower {lower:+.0%})"
        )
    if upper is not None and value > target * (1 + upper):
        out.append(
            f"{key} {value:.3g} above {target * (1 + upper):.3g} "
            f"(reference {target:g}, upper {upper:+.0%})"
        )
    return out
