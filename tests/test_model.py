"""Deep-Emotion and the VGG network: sizes, shapes, the identity attention, train/eval dropout."""

from pathlib import Path

import torch

import fer_sweep.weights

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


def test_unloadable_files_get_one_line_without_torch_advice(tmp_path):
    """A truncated checkpoint, a text file and a pickle of objects: one line naming the file and what
    is expected, never torch's advice to rerun with weights_only=False nor a sentence cut short."""
    import pickle

    import pytest

    from fer_sweep.models.registry import CheckpointError

    shipped = Path(fer_sweep.weights.__file__).parent / "deep_emotion.pt"
    half = tmp_path / "half.pt"
    half.write_bytes(shipped.read_bytes()[:100_000])
    text = tmp_path / "notes.pt"
    text.write_text("hello\n")
    objects = tmp_path / "objects.pt"
    objects.write_bytes(pickle.dumps({"fer_sweep": {"net": {"name": "deep_emotion"}}, "x": Path("/")}))
    for path, why in ((half, "truncated"), (text, "another kind of file"), (objects, "safe loading")):
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
        msg = str(info.value)
        assert msg.startswith(f"{path}: not a loadable PyTorch checkpoint (") and why in msg, msg
        assert msg.endswith("expected a .ckpt or .pt file written by fer_sweep") and "\n" not in msg
        assert "weights_only` set to `False" not in msg


def test_a_folder_given_as_checkpoint_says_so(tmp_path):
    """Was "no such checkpoint file" for a folder that plainly exists; a run folder gets its checkpoint named."""
    import pytest

    from fer_sweep.models.registry import CheckpointError
    from fer_sweep.weights import resolve_model

    with pytest.raises(CheckpointError, match=r"is a folder; expected a checkpoint file \(\.pt or \.ckpt\)$"):
        load_checkpoint(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"^ckpt=.*: is a folder; expected a checkpoint file \(\.pt or \.ckpt\) or a shipped model name$"):
        resolve_model(tmp_path)
    best = tmp_path / "run" / "checkpoints" / "best.ckpt"
    best.parent.mkdir(parents=True)
    best.write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=f"^init_weights={tmp_path / 'run'}: is a folder; expected a checkpoint file such as {best}$"):
        resolve_model(tmp_path / "run", key="init_weights")


def test_export_to_an_unwritable_path_is_one_line(tmp_path, capsys):
    from fer_sweep.models.export import main

    shipped = Path(fer_sweep.weights.__file__).parent / "deep_emotion.pt"
    blocker = tmp_path / "blocker"
    blocker.write_text("keep me\n")
    assert main([str(shipped), str(blocker / "x.pt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"fer_sweep.models.export: {blocker / 'x.pt'}: cannot write"), err
    assert blocker.read_text() == "keep me\n"
    assert main([str(shipped), str(tmp_path / "ok.pt")]) == 0 and (tmp_path / "ok.pt").is_file()
