"""The one place that names FER2013's classes.

FER2013's original CSV numbers its classes 0=angry ... 6=neutral, which is *not* alphabetical;
image-folder editions sort folders alphabetically.  Every reader maps folder names through
:data:`CLASS_NAMES` so labels agree with the CSV and with other FER tools, whatever the folder order.
"""

from __future__ import annotations

CLASS_NAMES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
"""Canonical 7-class order of the FER2013 CSV (label = index)."""

SIX_CLASS_NAMES: tuple[str, ...] = ("angry", "fear", "happy", "sad", "surprise", "neutral")
"""6-class variant: *disgust* (1.5% of the data) is folded into *angry*, its nearest class."""

USAGES: tuple[str, ...] = ("Training", "PublicTest", "PrivateTest", "Test")
"""Usage codes.  The first three are the CSV's official ``Usage`` values; ``Test`` marks images of an
image-folder copy whose ``test/`` folder carries no ``PublicTest_``/``PrivateTest_`` prefixes."""

TRAINING, PUBLIC_TEST, PRIVATE_TEST, UNSPLIT_TEST = range(4)


def class_names(num_classes: int) -> tuple[str, ...]:
    """Class names for a 7- or 6-class problem."""
    if num_classes == 7:
        return CLASS_NAMES
    if num_classes == 6:
        return SIX_CLASS_NAMES
    raise ValueError(f"num_classes={num_classes}: expected 7 (FER2013) or 6 (disgust folded into angry)")


def fold_to_six(labels):
    """Map 7-class labels to the 6-class problem: disgust -> angry, later classes shift down by one."""
    out = labels.clone()
    out[labels == 1] = 0
    out[labels >= 2] -= 1
    return out
