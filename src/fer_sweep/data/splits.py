"""Which images train, validate and test: the official FER2013 split and the study's 70/30 protocol.

``official``: Training -> train, PublicTest -> val, PrivateTest -> test (the split papers report).
``study``: the study's protocol, the 28,709 Training images split 70% train / 30% held out
(stratified by class), PrivateTest kept as the final test.

Carved splits are drawn with ``split_seed``, which is independent of the run seed, so every run of a
sweep sees the same split.  A copy without file-name prefixes has no PublicTest: its ``test/`` folder
is the test split and validation is carved (stratified) from ``train/``.
"""

from __future__ import annotations

from typing import Collection

import numpy as np

from fer_sweep.data.classes import PRIVATE_TEST, PUBLIC_TEST, TRAINING, UNSPLIT_TEST
from fer_sweep.data.errors import FER2013Error

SPLITS = ("official", "study")


def stratified_split(labels: np.ndarray, indices: np.ndarray, held_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``indices`` into (kept, held) with ``held_fraction`` of every class held out."""
    rng = np.random.default_rng(seed)
    kept, held = [], []
    for c in np.unique(labels[indices]):
        members = indices[labels[indices] == c]
        members = members[rng.permutation(len(members))]
        n_held = int(round(len(members) * held_fraction))
        held.append(members[:n_held])
        kept.append(members[n_held:])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(held))


def split_indices(labels: np.ndarray, usage: np.ndarray, split: str = "official", split_seed: int = 12345, val_fraction: float = 0.1, study_holdout: float = 0.3) -> dict[str, np.ndarray]:
    """Indices of the train/val/test images for the chosen protocol."""
    if split not in SPLITS:
        raise FER2013Error(f"data.split={split!r}; expected one of {list(SPLITS)}")
    training = np.flatnonzero(usage == TRAINING)
    public, private, unsplit = (np.flatnonzero(usage == u) for u in (PUBLIC_TEST, PRIVATE_TEST, UNSPLIT_TEST))
    test = private if len(private) else unsplit
    if split == "study":
        train, val = stratified_split(labels, training, study_holdout, split_seed)
    elif len(public):
        train, val = training, public
    else:
        train, val = stratified_split(labels, training, val_fraction, split_seed)
    out = {"train": train, "val": val, "test": test}
    for name, idx in out.items():
        if len(idx) == 0:
            raise FER2013Error(f"split '{name}' is empty under data.split={split}; expected images for train, val and test")
    return out


UNSPLIT_TEST_WORDS = "all of test/ (PublicTest and PrivateTest together: the copy's file names carry no prefixes)"


def split_sources(test_usages: Collection[int], split: str = "official", val_fraction: float = 0.1, study_holdout: float = 0.3, subset: float | None = None) -> dict[str, str]:
    """What :func:`split_indices` validates and tests on, in words, for a copy holding the test
    usages ``test_usages`` (PublicTest, PrivateTest, unprefixed Test): ``{"val": "PublicTest",
    "test": "PrivateTest"}`` for the full official FER2013 (``subset``: the stratified fraction of
    every split that ``data.subset`` keeps, said too).  Runs record it in ``results.json`` so
    that reports label their accuracies by what was measured, not by what is usual."""
    if split == "study":
        val = f"{study_holdout:.0%} of Training (data.split=study)"
    elif PUBLIC_TEST in test_usages:
        val = "PublicTest"
    else:
        val = f"{val_fraction:.0%} of Training (the copy has no PublicTest)"
    out = {"val": val, "test": "PrivateTest" if PRIVATE_TEST in test_usages else UNSPLIT_TEST_WORDS}
    if subset is not None and float(subset) < 1.0:
        out = {k: f"{v}, a stratified {100 * float(subset):.3g}% subset (data.subset={subset:g})" for k, v in out.items()}
    return out
