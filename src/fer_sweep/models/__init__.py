"""Networks (Deep-Emotion, VGG-style), the LightningModule and safe checkpoint loading."""

from fer_sweep.models.registry import NETWORKS, CheckpointError, build_net, load_checkpoint

__all__ = ["NETWORKS", "CheckpointError", "build_net", "load_checkpoint"]
