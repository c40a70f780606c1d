"""Colours and labels shared by every figure, so a scheduler has the same colour everywhere."""

from __future__ import annotations

from typing import Iterable

SCHEDULER_COLORS: dict[str, str] = {
    "step": "#1f77b4",       # blue
    "multistep": "#ff7f0e",  # orange
    "cosine": "#2ca02c",     # green
    "plateau": "#d62728",    # red
    "none": "#7f7f7f",       # grey
}
"""Fixed colour of each of the study's schedulers (and of a constant lr)."""
FALLBACK_COLORS: tuple[str, ...] = (
    "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#393b79", "#ad494a", "#637939", "#843c39", "#5254a3",
)
"""Colours for other groups, in order of appearance (none of them is a scheduler's colour)."""


def group_colors(labels: Iterable[str]) -> dict[str, str]:
    """``{label: colour}``: a scheduler's fixed colour when the label is (or starts with) a scheduler
    name, otherwise the next fallback colour (cycling when there are many groups)."""
    out, k = {}, 0
    for label in labels:
        head = label.split(",")[0].strip()
        if head in SCHEDULER_COLORS and SCHEDULER_COLORS[head] not in out.values():
            out[label] = SCHEDULER_COLORS[head]
        else:
            out[label] = FALLBACK_COLORS[k % len(FALLBACK_COLORS)]
            k += 1
    return out
