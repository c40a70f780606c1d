"""Fast tests of the FER2013 data code on tiny synthetic copies written to tmp_path.

Each bad input the data module must refuse has a test here that checks the one-line message names
the file (and row) and that nothing was cached from the failed copy.  No test here reads FER2013.
"""

from __future__ import annotations

import json
import logging
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from fer_sweep.data import __main__ as summary_cli
from fer_sweep.data.augment import BatchAugment
from fer_sweep.data.cache import cache_key, load_fer2013
from fer_sweep.data.classes import (
    CLASS_NAMES,
    PRIVATE_TEST,
    PUBLIC_TEST,
    SIX_CLASS_NAMES,
    TRAINING,
    UNSPLIT_TEST,
    class_names,
    fold_to_six,
)
from fer_sweep.data.datamodule import FER2013DataModule
from fer_sweep.data.errors import FER2013Error
from fer_sweep.data.loader import TensorBatches
from fer_sweep.data.readers import detect_layout, read_csv, read_folders, read_raw
from fer_sweep.data.splits import split_indices

CONF = Path(__file__).resolve().parents[1] / "conf"
TRAIN_COUNTS = (4, 1, 3, 6, 2, 2, 5)  # imbalanced on purpose, canonical label order


# -- synthetic FER2013 copies --------------------------------------------------------------------
def face(seed: int, shape: tuple[int, int] = (48, 48)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def write_folders(root: Path, prefixed: bool = True, train_counts=TRAIN_COUNTS, test_per_class: int = 1) -> Path:
    """A folder-layout copy: PNG (lossless) faces, Training_/PublicTest_/PrivateTest_ or no prefixes."""
    seed = 0
    for label, cls in enumerate(CLASS_NAMES):
        groups = [("train", "Training", train_counts[label])]
        if prefixed:
            groups += [("test", "PublicTest", test_per_class), ("test", "PrivateTest", test_per_class)]
        else:
            groups += [("test", "Test", 2 * test_per_class)]
        for split, usage, count in groups:
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                name = f"{usage}_{seed}.png" if prefixed else f"{seed}.png"
                cv2.imwrite(str(folder / name), face(seed))
                seed += 1
    return root


def pixels_text(img: np.ndarray) -> str:
    return " ".join(map(str, img.ravel().tolist()))


def write_csv(path: Path, header: str = "emotion,pixels,Usage", rows: list[tuple] | None = None) -> Path:
    """A Kaggle-style CSV; ``rows`` are (emotion, pixels, Usage) in that order whatever the header."""
    if rows is None:
        rows = [(i % 7, pixels_text(face(i)), ("Training", "PublicTest", "PrivateTest")[i % 3]) for i in range(12)]
    cols = [h.strip().lower() for h in header.split(",")]
    lines = [header]
    for emotion, pixels, usage in rows:
        values = {"emotion": str(emotion), "pixels": pixels, "usage": usage}
        lines.append(",".join(values[c] for c in cols))
    path.write_text("\n".join(lines) + "\n")
    return path


def one_line_error(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg, f"error spans lines: {msg!r}"
    return msg


# -- layout detection and missing data ------------------------------------------------------------
def test_detects_folders_csv_icml_and_nested_copy(tmp_path):
    folders = write_folders(tmp_path / "a")
    assert detect_layout(folders) == ("folders", folders)
    (tmp_path / "b").mkdir()
    csv_file = write_csv(tmp_path / "b" / "fer2013.csv")
    assert detect_layout(tmp_path / "b") == ("csv", csv_file)
    assert detect_layout(csv_file) == ("csv", csv_file)
    (tmp_path / "c").mkdir()
    icml = write_csv(tmp_path / "c" / "icml_face_data.csv", header="emotion, Usage, pixels")
    assert detect_layout(tmp_path / "c") == ("csv", icml)
    nested = write_folders(tmp_path / "d" / "fer2013")
    assert detect_layout(tmp_path / "d") == ("folders", nested)


def test_missing_path_says_where_to_obtain_fer2013(tmp_path):
    with pytest.raises(FER2013Error) as exc:
        read_raw(tmp_path / "nowhere")
    msg = one_line_error(exc)
    assert str(tmp_path / "nowhere") in msg and "kaggle.com" in msg and "--download" in msg


def test_folder_without_fer2013_names_accepted_layouts(tmp_path):
    (tmp_path / "stuff.txt").write_text("x")
    with pytest.raises(FER2013Error) as exc:
        read_raw(tmp_path)
    msg = one_line_error(exc)
    assert "train/<class>/" in msg and "fer2013.csv" in msg


def test_non_csv_file_is_refused(tmp_path):
    path = tmp_path / "fer2013.zip"
    path.write_bytes(b"PK")
    with pytest.raises(FER2013Error, match="fer2013.zip: expected fer2013.csv"):
        read_raw(path)


# -- CSV ------------------------------------------------------------------------------------------
def test_csv_rows_give_labels_usage_and_pixels(tmp_path):
    raw = read_csv(write_csv(tmp_path / "fer2013.csv"))
    assert raw.images.shape == (12, 48, 48) and raw.images.dtype == np.uint8
    assert raw.labels.tolist() == [i % 7 for i in range(12)]
    assert raw.usage.tolist() == [(TRAINING, PUBLIC_TEST, PRIVATE_TEST)[i % 3] for i in range(12)]
    assert np.array_equal(raw.images[5], face(5))
    assert raw.sources[0] == "fer2013.csv:2"


def test_icml_variant_with_spaced_header_reads_the_same(tmp_path):
    plain = read_csv(write_csv(tmp_path / "fer2013.csv"))
    icml = read_csv(write_csv(tmp_path / "icml_face_data.csv", header="emotion, Usage, pixels"))
    assert np.array_equal(plain.images, icml.images)
    assert np.array_equal(plain.labels, icml.labels) and np.array_equal(plain.usage, icml.usage)


def test_csv_blank_lines_keep_true_row_numbers(tmp_path):
    path = write_csv(tmp_path / "fer2013.csv")
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:2] + [""] + lines[2:]) + "\n")
    raw = read_csv(path)
    assert len(raw.labels) == 12 and raw.sources[:2] == ["fer2013.csv:2", "fer2013.csv:4"]


GOOD = pixels_text(face(99))
BAD_ROWS = {
    "too few pixels": ((0, " ".join(GOOD.split()[:-1]), "Training"), "2303 pixel values; expected 2304"),
    "too many pixels": ((0, GOOD + " 7", "Training"), "2305 pixel values; expected 2304"),
    "non-numeric pixel": ((0, "abc " + " ".join(GOOD.split()[1:]), "Training"), "pixel value 'abc'; expected integers 0-255"),
    "fractional pixel": ((0, "1.5 " + " ".join(GOOD.split()[1:]), "Training"), "pixel value '1.5'"),
    "pixel above 255": ((0, "256 " + " ".join(GOOD.split()[1:]), "Training"), "pixel value '256'; expected integers 0-255"),
    "huge pixel": ((0, "99999999999 " + " ".join(GOOD.split()[1:]), "Training"), "pixel value '99999999999'"),
    "label 7": ((7, GOOD, "Training"), "emotion 7; expected 0-6"),
    "label -1": ((-1, GOOD, "Training"), "emotion -1; expected 0-6"),
    "label not a number": (("happy", GOOD, "Training"), "emotion 'happy'; expected an integer 0-6"),
    "unknown Usage": ((3, GOOD, "Validation"), "Usage 'Validation'; expected Training, PublicTest or PrivateTest"),
}


@pytest.mark.parametrize("case", list(BAD_ROWS))
def test_bad_csv_row_is_one_line_naming_file_and_row(tmp_path, case):
    row, expected = BAD_ROWS[case]
    good = [(0, GOOD, "Training"), (1, GOOD, "PrivateTest")]
    path = write_csv(tmp_path / "fer2013.csv", rows=[good[0], row, good[1]])
    cache = tmp_path / "cache"
    with pytest.raises(FER2013Error) as exc:
        load_fer2013(path, cache)
    msg = one_line_error(exc)
    assert msg.startswith(f"{path}:3: ") and expected in msg
    assert not cache.exists() or not any(cache.iterdir()), "a failed CSV was cached"


def test_csv_row_with_extra_field_is_refused(tmp_path):
    path = write_csv(tmp_path / "fer2013.csv")
    with path.open("a") as fh:
        fh.write(f"0,{GOOD},Training,extra\n")
    with pytest.raises(FER2013Error) as exc:
        read_csv(path)
    assert f"{path}:14: 4 fields; expected 3" in one_line_error(exc)


def test_csv_bad_header_and_empty_file(tmp_path):
    bad = tmp_path / "fer2013.csv"
    bad.write_text(f"label,pixels,split\n0,{GOOD},Training\n")
    with pytest.raises(FER2013Error, match="expected columns emotion,pixels,Usage"):
        read_csv(bad)
    bad.write_bytes(b"")
    with pytest.raises(FER2013Error, match="fer2013.csv: empty file"):
        read_csv(bad)
    bad.write_text("emotion,pixels,Usage\n")
    with pytest.raises(FER2013Error, match="no data rows"):
        read_csv(bad)


def test_csv_without_test_rows_is_an_empty_split(tmp_path):
    path = write_csv(tmp_path / "fer2013.csv", rows=[(0, GOOD, "Training"), (1, GOOD, "PublicTest")])
    with pytest.raises(FER2013Error) as exc:
        load_fer2013(path, tmp_path / "cache")
    assert "empty test split; expected rows with Usage PrivateTest" in one_line_error(exc)
    assert not (tmp_path / "cache").exists()


# -- image folders --------------------------------------------------------------------------------
def test_folder_labels_use_canonical_order_whatever_the_folder_case(tmp_path):
    root = write_folders(tmp_path)
    (root / "test" / "happy").rename(root / "test" / "Happy")
    raw = read_folders(root)
    folder_of = [s.split("/")[1].lower() for s in raw.sources]
    assert [CLASS_NAMES.index(f) for f in folder_of] == raw.labels.tolist()
    assert {int(l) for s, l in zip(raw.sources, raw.labels) if s.startswith("test/Happy/")} == {3}
    assert {int(l) for s, l in zip(raw.sources, raw.labels) if s.startswith("train/neutral/")} == {6}
    assert {int(l) for s, l in zip(raw.sources, raw.labels) if s.startswith("train/sad/")} == {4}


def test_file_prefixes_carry_the_official_split(tmp_path):
    raw = read_folders(write_folders(tmp_path))
    for source, usage in zip(raw.sources, raw.usage):
        prefix = source.rsplit("/", 1)[1].split("_")[0]
        assert ("Training", "PublicTest", "PrivateTest").index(prefix) == usage
    assert np.bincount(raw.labels[raw.usage == TRAINING], minlength=7).tolist() == list(TRAIN_COUNTS)


def test_unprefixed_copy_tests_on_test_folder_and_carves_stratified_val(tmp_path):
    raw = read_folders(write_folders(tmp_path, prefixed=False, train_counts=(20,) * 7))
    assert set(raw.usage[[s.startswith("test/") for s in raw.sources]].tolist()) == {UNSPLIT_TEST}
    idx = split_indices(raw.labels, raw.usage, "official", split_seed=1, val_fraction=0.1)
    assert np.array_equal(idx["test"], np.flatnonzero(raw.usage == UNSPLIT_TEST))
    assert np.bincount(raw.labels[idx["val"]], minlength=7).tolist() == [2] * 7
    assert not set(idx["val"]) & set(idx["train"])
    assert sorted([*idx["val"], *idx["train"]]) == np.flatnonzero(raw.usage == TRAINING).tolist()


def _zero_byte(root):
    (path := root / "train" / "happy" / "Training_zero.png").write_bytes(b"")
    return path, "empty (zero-byte) file"


def _garbage(root):
    (path := root / "test" / "sad" / "PrivateTest_bad.jpg").write_bytes(b"this is not a JPEG at all")
    return path, "corrupt or unreadable image"


def _truncated(root):
    ok, png = cv2.imencode(".png", face(7))
    (path := root / "train" / "fear" / "Training_cut.png").write_bytes(png.tobytes()[: len(png) // 2])
    return path, "corrupt or unreadable image"


def _non_image(root):
    (path := root / "train" / "angry" / "notes.txt").write_text("labels checked by hand")
    return path, "not an image file; expected one of .jpg"


def _unknown_class(root):
    (path := root / "train" / "contempt").mkdir()
    cv2.imwrite(str(path / "Training_1.png"), face(1))
    return path, "unknown class folder 'contempt'; expected one of"


def _stray_file(root):
    (path := root / "train" / "labels.csv").write_text("x")
    return path, "unexpected file; expected only class folders"


def _empty_test_split(root):
    for f in (root / "test").rglob("*.png"):
        f.unlink()
    return root, "empty test split; expected PrivateTest_ or unprefixed images in test/<class>/"


def _no_train_images(root):
    for f in (root / "train").rglob("*.png"):
        f.unlink()
    return root, "empty training split"


def _missing_test_folder(root):
    for f in (root / "test").rglob("*.png"):
        f.unlink()
    for d in (root / "test").iterdir():
        d.rmdir()
    (root / "test").rmdir()
    return root / "test", "missing; expected test/<class>/ folders"


def _mixed_prefixes(root):
    cv2.imwrite(str(path := root / "train" / "happy" / "noprefix.png"), face(3))
    return path, "lacks a Training_/PublicTest_/PrivateTest_ prefix"


BAD_FOLDERS = [_zero_byte, _garbage, _truncated, _non_image, _unknown_class, _stray_file, _empty_test_split, _no_train_images, _missing_test_folder, _mixed_prefixes]


@pytest.mark.parametrize("spoil", BAD_FOLDERS, ids=lambda f: f.__name__.strip("_"))
def test_bad_folder_input_is_one_line_naming_the_file_and_nothing_is_cached(tmp_path, spoil):
    root = write_folders(tmp_path / "fer")
    path, expected = spoil(root)
    cache = tmp_path / "cache"
    with pytest.raises(FER2013Error) as exc:
        load_fer2013(root, cache)
    msg = one_line_error(exc)
    assert msg.startswith(f"{path}: ") and expected in msg, msg
    assert not cache.exists() or not any(cache.iterdir()), f"cached a failed copy: {list(cache.iterdir())}"


def test_images_not_48x48_are_resized_and_counted_in_one_warning(tmp_path, caplog):
    root = write_folders(tmp_path)
    big = root / "train" / "happy" / "Training_big.png"
    cv2.imwrite(str(big), np.full((96, 96), 200, np.uint8))
    cv2.imwrite(str(root / "train" / "sad" / "Training_small.png"), face(5, (40, 40)))
    cv2.imwrite(str(root / "test" / "fear" / "PrivateTest_wide.png"), face(6, (48, 64)))
    with caplog.at_level(logging.WARNING, logger="fer_sweep.data"):
        raw = read_folders(root)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].getMessage().startswith("3 images in ")
    assert raw.resized == 3 and raw.images.shape[1:] == (48, 48)
    assert (raw.images[raw.sources.index("train/happy/Training_big.png")] == 200).all()


# -- the tensor cache -----------------------------------------------------------------------------
def test_cache_is_written_once_then_served_without_decoding(tmp_path, monkeypatch):
    root, cache = write_folders(tmp_path / "fer"), tmp_path / "cache"
    first = load_fer2013(root, cache)
    assert [p.name for p in cache.iterdir()] == [f"{cache_key(root)}.pt"]

    def no_decode(_):
        raise AssertionError("decoded again although the cache is valid")

    monkeypatch.setattr("fer_sweep.data.cache.read_folders", no_decode)
    again = load_fer2013(root, cache)
    assert np.array_equal(first.images, again.images) and np.array_equal(first.labels, again.labels)
    assert np.array_equal(first.usage, again.usage) and first.sources == again.sources


def test_changed_image_is_never_served_from_stale_cache(tmp_path):
    root, cache = write_folders(tmp_path / "fer"), tmp_path / "cache"
    before = load_fer2013(root, cache)
    target = "train/happy/" + sorted(p.name for p in (root / "train" / "happy").iterdir())[0]
    assert not (before.images[before.sources.index(target)] == 17).all()
    cv2.imwrite(str(root / target), np.full((48, 48), 17, np.uint8))
    after = load_fer2013(root, cache)
    assert (after.images[after.sources.index(target)] == 17).all()
    assert len(list(cache.glob("*.pt"))) == 2


def test_added_or_removed_image_changes_the_cache_key(tmp_path):
    root = write_folders(tmp_path)
    key = cache_key(root)
    extra = root / "train" / "fear" / "Training_extra.png"
    cv2.imwrite(str(extra), face(123))
    assert cache_key(root) != key
    extra.unlink()
    assert cache_key(root) == key


def test_changed_csv_is_never_served_from_stale_cache(tmp_path):
    path, cache = write_csv(tmp_path / "fer2013.csv"), tmp_path / "cache"
    assert load_fer2013(path, cache).labels[0] == 0
    write_csv(path, rows=[(6, GOOD, "Training"), (2, GOOD, "PrivateTest")])
    assert load_fer2013(path, cache).labels.tolist() == [6, 2]


def test_damaged_cache_file_is_rebuilt(tmp_path):
    root, cache = write_folders(tmp_path / "fer"), tmp_path / "cache"
    good = load_fer2013(root, cache)
    cache_file = cache / f"{cache_key(root)}.pt"
    cache_file.write_bytes(b"half a tensor")
    again = load_fer2013(root, cache)
    assert np.array_equal(good.images, again.images)
    assert torch.load(cache_file, weights_only=True)["images"].shape == good.images.shape


# -- splits and classes ---------------------------------------------------------------------------
def _usage_and_labels(n_train=1000, n_public=100, n_private=100, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.choice(7, n_train + n_public + n_private, p=[0.14, 0.02, 0.14, 0.25, 0.17, 0.11, 0.17])
    usage = np.repeat([TRAINING, PUBLIC_TEST, PRIVATE_TEST], [n_train, n_public, n_private]).astype(np.int8)
    return labels, usage


def test_official_split_follows_usage():
    labels, usage = _usage_and_labels()
    idx = split_indices(labels, usage, "official")
    assert [len(idx[k]) for k in ("train", "val", "test")] == [1000, 100, 100]
    assert set(usage[idx["val"]]) == {PUBLIC_TEST} and set(usage[idx["test"]]) == {PRIVATE_TEST}


def test_study_split_is_70_30_stratified_seeded_and_tests_on_private():
    labels, usage = _usage_and_labels()
    idx = split_indices(labels, usage, "study", split_seed=7)
    training = np.flatnonzero(usage == TRAINING)
    assert sorted([*idx["train"], *idx["val"]]) == training.tolist() and not set(idx["train"]) & set(idx["val"])
    per_class = np.bincount(labels[training], minlength=7)
    held = np.bincount(labels[idx["val"]], minlength=7)
    assert held.tolist() == [int(round(0.3 * n)) for n in per_class]
    assert set(usage[idx["test"]]) == {PRIVATE_TEST} and len(idx["test"]) == 100
    same = split_indices(labels, usage, "study", split_seed=7)
    other = split_indices(labels, usage, "study", split_seed=8)
    assert np.array_equal(idx["val"], same["val"]) and not np.array_equal(idx["val"], other["val"])


def test_unknown_split_and_empty_split_are_refused():
    labels, usage = _usage_and_labels()
    with pytest.raises(FER2013Error, match="data.split='kfold'; expected one of"):
        split_indices(labels, usage, "kfold")
    with pytest.raises(FER2013Error, match="split 'test' is empty"):
        split_indices(labels[:1100], usage[:1100], "official")


def test_six_classes_fold_disgust_into_angry():
    seven = torch.arange(7)
    six = fold_to_six(seven)
    assert six.tolist() == [0, 0, 1, 2, 3, 4, 5]
    assert [SIX_CLASS_NAMES[int(s)] for s in six] == ["angry", "angry", *CLASS_NAMES[2:]]
    assert class_names(6) == SIX_CLASS_NAMES and class_names(7) == CLASS_NAMES
    with pytest.raises(ValueError, match="num_classes=5"):
        class_names(5)


# -- batched augmentation -------------------------------------------------------------------------
def _batch(n=16, seed=0):
    return torch.rand(n, 1, 48, 48, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _augment(name: str) -> BatchAugment:
    """The augment config as Hydra instantiates it (conf/augment/<name>.yaml)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    return instantiate(OmegaConf.load(CONF / "augment" / f"{name}.yaml"))


def test_augment_none_is_identity():
    aug = _augment("none")
    x = _batch()
    assert not aug.active
    assert torch.equal(aug(x.clone(), torch.Generator().manual_seed(0)), x)


def test_augment_standard_is_reproducible_for_a_seed_and_varies_across_seeds():
    aug, x = _augment("standard"), _batch()
    assert aug.active
    a = aug(x, torch.Generator().manual_seed(3))
    b = aug(x, torch.Generator().manual_seed(3))
    c = aug(x, torch.Generator().manual_seed(4))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b)
    assert not torch.allclose(a, c) and not torch.allclose(a, x)
    assert a.min() >= x.min() - 1e-5 and a.max() <= x.max() + 1e-5  # border padding, erasing with 0


def test_hflip_alone_mirrors_exactly():
    x = _batch(4)
    out = BatchAugment(hflip=1.0)(x, torch.Generator().manual_seed(0))
    assert torch.allclose(out, x.flip(-1), atol=1e-5)


def test_random_erasing_blanks_one_rectangle_per_image():
    x = torch.ones(32, 1, 48, 48)
    out = BatchAugment(erasing=1.0, erasing_area=(0.05, 0.2))(x, torch.Generator().manual_seed(0))
    for img in out[:, 0]:
        rows, cols = torch.nonzero(img == 0, as_tuple=True)
        assert len(rows) > 0 and set(img.unique().tolist()) <= {0.0, 1.0}
        box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert box == len(rows), "erased pixels do not form one rectangle"
        assert 0.02 * 48 * 48 <= len(rows) <= 0.3 * 48 * 48


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (checks augmentation on the GPU)")


@needs_cuda
def test_augment_on_gpu_is_reproducible_for_a_seed():
    aug, x = _augment("standard"), _batch().cuda()

    def gen(seed):
        return torch.Generator(device="cuda").manual_seed(seed)

    a, b, c = aug(x, gen(3)), aug(x, gen(3)), aug(x, gen(4))
    assert a.is_cuda and torch.equal(a, b) and not torch.allclose(a, c)
    assert torch.allclose(BatchAugment(hflip=1.0)(x, gen(0)), x.flip(-1), atol=1e-5)


@needs_cuda
def test_datamodule_keeps_data_on_the_gpu_and_augments_there(tmp_path):
    cuda = torch.device("cuda", torch.cuda.current_device())

    def first_batch(seed):
        dm = FER2013DataModule(root=str(write_folders(tmp_path / "fer")), cache_dir=str(tmp_path / "c"), augment=_augment("standard"), seed=seed, batch_size=8)
        dm.trainer = SimpleNamespace(training=True, current_epoch=0, strategy=SimpleNamespace(root_device=cuda))
        dm.setup("fit")
        assert all(t.is_cuda for pair in dm.tensors.values() for t in pair)
        return dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)

    (x, y), (x2, _) = first_batch(0), first_batch(0)
    assert x.is_cuda and y.is_cuda and x.shape == (8, 1, 48, 48) and torch.equal(x, x2)


# -- batches and the data module ------------------------------------------------------------------
def test_training_batches_cover_each_image_once_in_a_seeded_order():
    images, labels = torch.zeros(10, 48, 48, dtype=torch.uint8), torch.arange(10)

    def order(seed, epoch):
        batches = TensorBatches(images, labels, 4, shuffle=True, seed=seed, epoch_fn=lambda: epoch)
        return torch.cat([y for _, y in batches]).tolist()

    assert sorted(order(0, 0)) == list(range(10)) and len(TensorBatches(images, labels, 4)) == 3
    assert order(0, 0) == order(0, 0)
    assert order(0, 0) != order(0, 1) and order(0, 0) != order(1, 0)


def test_datamodule_setup_counts_weights_and_normalised_batches(tmp_path, caplog):
    root = write_folders(tmp_path / "fer")
    dm = FER2013DataModule(root=str(root), cache_dir=str(tmp_path / "cache"), batch_size=8)
    with caplog.at_level(logging.INFO, logger="fer_sweep.data"):
        dm.setup("fit")
    assert dm.class_counts == {"train": list(TRAIN_COUNTS), "val": [1] * 7, "test": [1] * 7}
    assert "train     23  angry=4, disgust=1, fear=3, happy=6" in caplog.text
    expected = torch.tensor([23 / (7 * c) for c in TRAIN_COUNTS])
    assert torch.allclose(dm.class_weights(), expected)
    images, labels = next(iter(dm.train_dataloader()))
    assert images.dtype == torch.uint8 and images.shape == (8, 48, 48)
    x, y = dm.on_after_batch_transfer((images, labels), 0)
    assert x.shape == (8, 1, 48, 48) and x.dtype == torch.float32
    assert torch.allclose(x, images.unsqueeze(1).float() / 127.5 - 1, atol=1e-6) and torch.equal(y, labels)


def test_datamodule_six_classes(tmp_path):
    dm = FER2013DataModule(root=str(write_folders(tmp_path / "fer")), cache_dir=str(tmp_path / "c"), num_classes=6)
    dm.setup("fit")
    assert dm.class_counts["train"] == [4 + 1, 3, 6, 2, 2, 5] and dm.class_names == SIX_CLASS_NAMES


def test_datamodule_augments_training_batches_only_and_reproducibly(tmp_path):
    root = write_folders(tmp_path / "fer")

    def batches(seed, training):
        dm = FER2013DataModule(root=str(root), cache_dir=str(tmp_path / "c"), augment=_augment("standard"), seed=seed)
        dm.trainer = SimpleNamespace(training=training, current_epoch=0)  # the fields the module reads
        dm.setup("fit")
        return [dm.on_after_batch_transfer(b, 0)[0] for b in dm.train_dataloader()]

    plain = torch.cat(batches(0, training=False))
    a, b, c = (torch.cat(batches(s, training=True)) for s in (0, 0, 1))
    assert torch.equal(a, b) and not torch.allclose(a, plain) and not torch.allclose(a[:8], c[:8])


def test_datamodule_without_root_says_how_to_set_it(monkeypatch):
    monkeypatch.delenv("FER2013_ROOT", raising=False)
    with pytest.raises(FER2013Error) as exc:
        FER2013DataModule(root=None)
    msg = one_line_error(exc)
    assert "data.root=<path>" in msg and "FER2013_ROOT" in msg and "kaggle.com" in msg


def test_datamodule_bad_input_fails_at_setup(tmp_path):
    root = write_folders(tmp_path / "fer")
    _garbage(root)
    dm = FER2013DataModule(root=str(root), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(FER2013Error, match="PrivateTest_bad.jpg: corrupt"):
        dm.setup("fit")
    with pytest.raises(FER2013Error, match="subset=0"):
        FER2013DataModule(root=str(root), subset=0)


# -- the summary command --------------------------------------------------------------------------
def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = summary_cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_summary_table_and_json(tmp_path, capsys):
    root = write_folders(tmp_path / "fer")
    code, out, _ = run_cli(capsys, str(root), "--cache-dir", str(tmp_path / "c"))
    assert code == 0
    lines = out.splitlines()
    assert lines[1].split() == ["label", "class", "Training", "PublicTest", "PrivateTest", "total"]
    assert lines[2].split() == ["0", "angry", "4", "1", "1", "6"]
    assert lines[5].split() == ["3", "happy", "6", "1", "1", "8"]
    assert lines[9].split() == ["total", "23", "7", "7", "37"]
    assert "DIFFER from the complete FER2013" in out
    code, out, _ = run_cli(capsys, str(root), "--json", "--cache-dir", str(tmp_path / "c"))
    info = json.loads(out)
    assert code == 0 and info["layout"] == "folders" and info["total"] == 37
    assert list(info["splits"]) == ["Training", "PublicTest", "PrivateTest"]
    assert info["splits"]["Training"] == {**dict(zip(CLASS_NAMES, TRAIN_COUNTS)), "total": 23}
    assert info["official_sizes"] is False


def test_summary_of_unprefixed_copy_shows_test(tmp_path, capsys):
    root = write_folders(tmp_path / "fer", prefixed=False)
    code, out, _ = run_cli(capsys, str(root), "--json", "--no-cache")
    splits = json.loads(out)["splits"]
    assert code == 0 and list(splits) == ["Training", "Test"] and splits["Test"]["total"] == 14


def test_summary_of_csv(tmp_path, capsys):
    path = write_csv(tmp_path / "fer2013.csv")
    code, out, _ = run_cli(capsys, str(tmp_path), "--json", "--no-cache")
    info = json.loads(out)
    assert code == 0 and info["layout"] == "csv" and info["root"] == str(path)
    assert [info["splits"][s]["total"] for s in ("Training", "PublicTest", "PrivateTest")] == [4, 4, 4]


def test_summary_no_cache_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FER_SWEEP_CACHE", str(tmp_path / "cache"))
    code, _, _ = run_cli(capsys, str(write_folders(tmp_path / "fer")), "--no-cache")
    assert code == 0 and not (tmp_path / "cache").exists()


@pytest.mark.parametrize("case", ["missing path", "corrupt image", "no path at all"])
def test_summary_errors_are_one_line_on_stderr_with_status_2(tmp_path, capsys, monkeypatch, case):
    monkeypatch.delenv("FER2013_ROOT", raising=False)
    root = write_folders(tmp_path / "fer")
    argv = {"missing path": [str(tmp_path / "nope")], "corrupt image": [str(root)], "no path at all": []}[case]
    if case == "corrupt image":
        _garbage(root)
    code, out, err = run_cli(capsys, *argv, "--cache-dir", str(tmp_path / "c"))
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    assert {"missing path": "nope: obtain FER2013", "corrupt image": "PrivateTest_bad.jpg: corrupt", "no path at all": "FER2013_ROOT"}[case] in err


def test_download_without_kagglehub_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "kagglehub", None)  # import kagglehub -> ImportError
    monkeypatch.delenv("KAGGLEHUB_CACHE", raising=False)
    code, _, err = run_cli(capsys, "--download", str(tmp_path / "dl"))
    assert code == 2 and err.strip() == "error: --download needs kagglehub, which is not installed: pip install 'fer_sweep[download]'"


def _fake_kagglehub(monkeypatch, download):
    module = types.ModuleType("kagglehub")
    module.dataset_download = download
    monkeypatch.setitem(sys.modules, "kagglehub", module)
    monkeypatch.delenv("KAGGLEHUB_CACHE", raising=False)


def test_download_offline_is_one_line(tmp_path, capsys, monkeypatch):
    def offline(handle):
        raise ConnectionError("Failed to resolve 'www.kaggle.com'\n(more detail on a second line)")

    _fake_kagglehub(monkeypatch, offline)
    code, _, err = run_cli(capsys, "--download", str(tmp_path / "dl"))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "msambare/fer2013" in err and "ConnectionError: Failed to resolve 'www.kaggle.com'" in err and "network" in err


def test_download_then_summary(tmp_path, capsys, monkeypatch):
    def fetch(handle):
        import os

        assert handle == "msambare/fer2013"
        return str(write_folders(Path(os.environ["KAGGLEHUB_CACHE"]) / "datasets" / "fer2013" / "versions" / "1"))

    _fake_kagglehub(monkeypatch, fetch)
    code, out, err = run_cli(capsys, "--download", str(tmp_path / "dl"), "--json", "--no-cache")
    assert code == 0 and json.loads(out)["splits"]["Training"]["total"] == 23
    assert f"FER2013 downloaded to {tmp_path / 'dl'}" in err
