"""fer_sweep: facial-expression recognition on FER2013 with PyTorch Lightning and Hydra sweeps."""

__version__ = "0.1.0"
