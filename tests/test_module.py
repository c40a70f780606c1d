"""``seed=null`` in the LightningModule and in a real short training: one seed drawn per run where a
seed is needed (dropout, data order, augmentation), kept in checkpoints for a resume, and nothing
recorded as the run's seed."""

from __future__ import annotations

import functools

import pytest
import torch

from fer_sweep.models.module import FERClassifier
from fer_sweep.models.registry import build_net
from fer_sweep.train import run
from helpers import TINY, compose_cfg


def _module(seed):
    return FERClassifier(build_net("deep_emotion", num_classes=7), functools.partial(torch.optim.Adam, lr=1e-3), seed=seed)


def test_seed_none_module_draws_once_and_checkpoints_what_it_drew():
    a, b = _module(None), _module(None)  # was: epoch_seed(None) -> TypeError at the first epoch
    assert a.seed is None and isinstance(a.run_seed, int) and a.run_seed == a.run_seed and a.run_seed != b.run_seed
    ckpt: dict = {}
    a.on_save_checkpoint(ckpt)
    assert ckpt["fer_sweep"]["drawn_seed"] == a.run_seed
    b.on_load_checkpoint(ckpt)
    assert b.run_seed == a.run_seed  # a resumed run keeps the dropout draws of the one it continues
    seeded: dict = {}
    _module(3).on_save_checkpoint(seeded)
    assert "drawn_seed" not in seeded["fer_sweep"]  # seeded checkpoints are unchanged


@pytest.mark.data
@pytest.mark.slow
def test_seed_null_run_trains_resumes_with_its_drawn_seeds_and_records_no_seed(fer_root, tmp_path):
    args = [*TINY, "seed=null", "logger=none", f"paths.output_dir={tmp_path}"]
    first = run(compose_cfg([*args, "trainer.max_epochs=1"]))
    assert first["status"] == "completed", first.get("error")
    assert first["seed"] is None  # an unseeded run says so; the drawn seeds are not its seed
    last = tmp_path / "checkpoints" / "last.ckpt"
    drawn = torch.load(last, weights_only=True)
    seeds = (drawn["fer_sweep"]["drawn_seed"], drawn["FER2013DataModule"]["drawn_seed"])
    resumed = run(compose_cfg([*args, "trainer.max_epochs=2"]))  # a completed run continued to more epochs
    assert resumed["status"] == "completed" and resumed["resumed_from_epoch"] == 1 and resumed["epochs_run"] == 2
    again = torch.load(last, weights_only=True)
    assert again["epoch"] == 1 and (again["fer_sweep"]["drawn_seed"], again["FER2013DataModule"]["drawn_seed"]) == seeds
