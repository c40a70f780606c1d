"""Tests on the real FER2013 (``fer_root`` fixture; skipped with a reason when the data is absent).

The expected numbers are the per-class counts of /work/shared/data/README.md, written out here
rather than taken from the code under test, and so is the canonical label of every class folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from fer_sweep.data import __main__ as summary_cli
from fer_sweep.data.classes import PRIVATE_TEST, PUBLIC_TEST, TRAINING
from fer_sweep.data.datamodule import FER2013DataModule
from fer_sweep.data.readers import read_raw

pytestmark = pytest.mark.data

LABEL = {"angry": 0, "disgust": 1, "fear": 2, "happy": 3, "sad": 4, "surprise": 5, "neutral": 6}
"""FER2013's original CSV numbering (README), independent of fer_sweep.data.classes."""

TRAINING_COUNTS = {"angry": 3995, "disgust": 436, "fear": 4097, "happy": 7215, "neutral": 4965, "sad": 4830, "surprise": 3171}
TEST_COUNTS = {"angry": 958, "disgust": 111, "fear": 1024, "happy": 1774, "neutral": 1233, "sad": 1247, "surprise": 831}
"""README: Training, and PublicTest + PrivateTest, per class."""


def by_label(counts: dict[str, int]) -> list[int]:
    return [counts[name] for name in sorted(LABEL, key=LABEL.get)]


def datamodule(**kwargs) -> FER2013DataModule:
    """A data module on the real copy, through the session's tensor cache."""
    dm = FER2013DataModule(root=os.environ["FER2013_ROOT"], cache_dir=os.environ["FER_SWEEP_CACHE"], **kwargs)
    dm.setup("fit")
    return dm


def test_split_and_class_counts_match_the_readme(fer_raw):
    counts = summary_cli.split_counts(fer_raw)
    assert list(counts) == ["Training", "PublicTest", "PrivateTest"]
    assert [sum(c) for c in counts.values()] == [28_709, 3_589, 3_589]
    assert counts["Training"] == by_label(TRAINING_COUNTS)
    assert (np.array(counts["PublicTest"]) + counts["PrivateTest"]).tolist() == by_label(TEST_COUNTS)
    table = summary_cli.format_table(summary_cli.summary(fer_raw, "fer2013", "folders"))
    assert table.splitlines()[-2].split() == ["total", "28,709", "3,589", "3,589", "35,887"]
    assert "Split sizes match the complete FER2013" in table


def test_every_class_folder_gets_its_canonical_label(fer_raw):
    folders = np.array([s.split("/")[1] for s in fer_raw.sources])
    happy_test = np.char.startswith(np.array(fer_raw.sources), "test/happy/")
    assert happy_test.sum() == TEST_COUNTS["happy"] and set(fer_raw.labels[happy_test].tolist()) == {3}
    for name, label in LABEL.items():
        assert set(fer_raw.labels[folders == name].tolist()) == {label}, name
    assert fer_raw.images.shape == (35_887, 48, 48) and fer_raw.resized == 0


def _sample(fer_root: Path, per_group: int = 4) -> list[str]:
    """A few relative paths for every (folder, file-name prefix, class)."""
    rng = np.random.default_rng(0)
    picked = []
    for split, prefixes in (("train", ["Training_"]), ("test", ["PublicTest_", "PrivateTest_"])):
        for cls in LABEL:
            names = sorted(os.listdir(fer_root / split / cls))
            for prefix in prefixes:
                group = [n for n in names if n.startswith(prefix)]
                picked += [f"{split}/{cls}/{group[i]}" for i in rng.choice(len(group), per_group, replace=False)]
    return sorted(picked)


def test_csv_and_folder_loaders_agree_on_a_sample(fer_root, fer_raw, tmp_path):
    sample = _sample(fer_root)
    rows = ["emotion,pixels,Usage"]
    for rel in sample:
        (tmp_path / "folders" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(fer_root / rel, tmp_path / "folders" / rel)
        pixels = cv2.imread(str(fer_root / rel), cv2.IMREAD_GRAYSCALE)
        usage = Path(rel).name.split("_")[0]
        rows.append(f"{LABEL[rel.split('/')[1]]},{' '.join(map(str, pixels.ravel()))},{usage}")
    (tmp_path / "fer2013.csv").write_text("\n".join(rows) + "\n")

    folders, table = read_raw(tmp_path / "folders"), read_raw(tmp_path / "fer2013.csv")
    assert len(table.labels) == len(folders.labels) == len(sample) == 84
    same = [folders.sources.index(rel) for rel in sample]  # CSV row i holds sample[i]
    assert np.array_equal(folders.images[same], table.images)
    assert np.array_equal(folders.labels[same], table.labels) and np.array_equal(folders.usage[same], table.usage)
    assert sorted(set(table.usage.tolist())) == [TRAINING, PUBLIC_TEST, PRIVATE_TEST] and len(set(table.labels)) == 7
    in_full = [fer_raw.sources.index(rel) for rel in sample]  # the cached full copy holds the same pixels
    assert np.array_equal(fer_raw.images[in_full], table.images) and np.array_equal(fer_raw.labels[in_full], table.labels)


def test_study_split_is_70_30_stratified_and_independent_of_run_seed(fer_raw):
    a, b = datamodule(split="study", seed=0), datamodule(split="study", seed=1)
    train, val = np.array(a.class_counts["train"]), np.array(a.class_counts["val"])
    assert (train + val).tolist() == by_label(TRAINING_COUNTS)
    assert val.tolist() == [int(round(0.3 * n)) for n in by_label(TRAINING_COUNTS)]
    assert abs(sum(val) - 0.3 * 28_709) < 1 and sum(train) + sum(val) == 28_709
    assert a.class_counts["test"] == np.bincount(fer_raw.labels[fer_raw.usage == PRIVATE_TEST], minlength=7).tolist()
    for split in ("train", "val", "test"):
        assert all(np.array_equal(x, y) for x, y in zip(a.tensors[split], b.tensors[split])), split
    other = datamodule(split="study", split_seed=54321)
    assert not np.array_equal(a.tensors["val"][0], other.tensors["val"][0])
    assert other.class_counts["val"] == a.class_counts["val"]


def test_six_class_counts_fold_disgust_into_angry(fer_raw):
    dm = datamodule(num_classes=6)
    public = np.bincount(fer_raw.labels[fer_raw.usage == PUBLIC_TEST], minlength=7)
    private = np.bincount(fer_raw.labels[fer_raw.usage == PRIVATE_TEST], minlength=7)
    six = lambda c: [int(c[0] + c[1]), *map(int, c[2:])]  # noqa: E731
    assert dm.class_counts["train"] == [4_431, 4_097, 7_215, 4_830, 3_171, 4_965]
    assert dm.class_counts["val"] == six(public) and dm.class_counts["test"] == six(private)
    weights = dm.class_weights()
    assert weights.argmax() == 4 and weights.argmin() == 2  # surprise rarest, happy commonest


@pytest.mark.slow
def test_summary_command_json_in_a_subprocess(fer_root):
    out = subprocess.run(
        [sys.executable, "-m", "fer_sweep.data", str(fer_root), "--json"],
        capture_output=True, text=True, timeout=120, check=False, env=os.environ.copy(),
    )
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert {name: split["total"] for name, split in info["splits"].items()} == {"Training": 28_709, "PublicTest": 3_589, "PrivateTest": 3_589}
    assert {c: info["splits"]["Training"][c] for c in LABEL} == TRAINING_COUNTS
    assert {c: info["splits"]["PublicTest"][c] + info["splits"]["PrivateTest"][c] for c in LABEL} == TEST_COUNTS
    assert info["official_sizes"] is True and info["total"] == 35_887
