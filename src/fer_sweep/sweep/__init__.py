"""Multirun bookkeeping: the Hydra callback, collecting job results, summaries and statistics."""
