"""fer_sweep's Hydra launcher that trains a sweep's Deep-Emotion jobs together (``hydra/launcher=packed``)."""
