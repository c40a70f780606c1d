"""Jobs of this process's launch that did not complete, as found by the Hydra callback."""

FAILED: list[str] = []
