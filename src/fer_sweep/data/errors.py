"""Errors for bad FER2013 input: one line each, naming the file (and row) and what was expected."""

from __future__ import annotations

OBTAIN_HINT = (
    "obtain FER2013 from Kaggle (https://www.kaggle.com/datasets/msambare/fer2013 for image folders, "
    "or the 'challenges-in-representation-learning-facial-expression-recognition-challenge' "
    "competition for fer2013.csv), or run `python -m fer_sweep.data --download <dir>` "
    "(needs `pip install fer_sweep[download]` and Kaggle credentials)"
)


class FER2013Error(ValueError):
    """A FER2013 copy that cannot be read as it is.  The message is one line and says what to fix."""
