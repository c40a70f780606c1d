"""Deep-Emotion and the VGG network: sizes, shapes, the identity attention, train/eval dropout."""

import torch

from fer_sweep.models.deep_emotion import DeepEmotion
from fer_sweep.models.registry import build_net, load_checkpoint
from fer_sweep.models.vgg import VGGFace48


def test_deep_emotion_parameter_count_and_output_shape():
    net = DeepEmotion()
    assert sum(p.numel() for p in net.parameters()) == 66_877
    assert net(torch.zeros(5, 1, 48, 48)).shape == (5, 7)
    assert DeepEmotion(num_classes=6)(torch.zeros(2, 1, 48, 48)).shape == (2, 6)


def test_fresh_attention_branch_is_the_identity_transform():
    torch.manual_seed(0)
    net = DeepEmotion().eval()
    x = torch.rand(4, 1, 48, 48)
    theta = net.transform(x)
    assert torch.allclose(theta, torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(4, 2, 3))
    assert torch.allclose(net.stn(x), x, atol=1e-5)


def test_dropout_only_in_training_mode():
    torch.manual_seed(0)
    net = DeepEmotion()
    x = torch.rand(8, 1, 48, 48)
    net.eval()
    assert torch.equal(net(x), net(x))  # the reference code's F.dropout stays on here: we don't
    net.train()
    assert not torch.equal(net(x), net(x))


def test_vgg_shapes_and_width():
    assert VGGFace48(width=0.25)(torch.zeros(2, 1, 48, 48)).shape == (2, 7)
    assert sum(p.numel() for p in VGGFace48(width=0.75, hidden=768).parameters()) == 4_964_407


def test_checkpoint_roundtrip_is_weights_only(tmp_path):
    net = build_net("deep_emotion", num_classes=7)
    path = tmp_path / "w.pt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}, "fer_sweep": {"net": {"name": "deep_emotion", "kwargs": {"num_classes": 7}}, "class_names": ["a"] * 7}}, path)
    loaded, names, _ = load_checkpoint(path)
    x = torch.rand(3, 1, 48, 48)
    assert torch.allclose(loaded(x), net.eval()(x))
