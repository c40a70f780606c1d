"""DDP on the CPU (two gloo processes through the CLI): every rank trains and tests its own shard.

:class:`ShardProbe` is added to the run as a callback (``+callbacks.shard_probe``; the CLI imports it
from this file through PYTHONPATH) and writes, per rank, the faces each rank trained on - the train
split's row numbers, carried in the batches as per-face extra targets - and how many faces it tested.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from fer_sweep.data.loader import epoch_seed
from helpers import PROJECT_ROOT, run_cli

pytestmark = pytest.mark.data


class ShardProbe(pl.Callback):
    """Record which training faces (by row of ``tensors["train"]``) and how many eval faces this rank saw."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)
        self.train: dict[int, list[int]] = {}
        self.val: dict[int, int] = {}
        self.test: list[int] = []
        self.seeds: dict[int, dict[str, int]] = {}  # per epoch: the run seeds (module, data) and the dropout and augmentation seeds

    def on_fit_start(self, trainer, pl_module) -> None:
        dm = trainer.datamodule  # the module ignores extra targets unless it distils
        dm.set_train_targets(torch.arange(len(dm.tensors["train"][1])))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.train.setdefault(trainer.current_epoch, []).extend(batch[2].tolist())
        if batch_idx == 0:  # after the module seeded dropout for the epoch and the batch was augmented
            self.seeds[trainer.current_epoch] = {"run": pl_module.run_seed, "data_run": trainer.datamodule.run_seed, "augment": trainer.datamodule._aug_gen.initial_seed(), "dropout": torch.initial_seed()}

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self.val[trainer.current_epoch] = self.val.get(trainer.current_epoch, 0) + len(batch[1])

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self.test.append(0)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self.test[-1] += len(batch[1])

    def teardown(self, trainer, pl_module, stage) -> None:
        dm = trainer.datamodule
        record = {"rank": trainer.global_rank, "world": trainer.world_size, "train": self.train, "val": self.val, "test": self.test, "seeds": self.seeds,
                  "sizes": {k: len(y) for k, (_, y) in dm.tensors.items()}}
        (self.dirpath / f"probe_rank{trainer.global_rank}.json").write_text(json.dumps(record))


@pytest.mark.slow
def test_ddp_ranks_train_disjoint_shards_and_count_each_test_face_once(fer_root, tmp_path):
    out = tmp_path / "ddp"
    env = {"PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}
    proc = run_cli(["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.sync_batchnorm=false",  # SyncBatchNorm needs a GPU
                    "seed=null",  # the drawn seed must be the same on both ranks, or the shards overlap
                    "augment=light",
                    "data.subset=0.03", "trainer.max_epochs=2", "logger=none", "callbacks.progress_bar=null", "threads=1",
                    f"hydra.run.dir={out}", "+callbacks.shard_probe._target_=test_ddp.ShardProbe", f"+callbacks.shard_probe.dirpath={out}"],
                   env=env, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    probes = [json.loads((out / f"probe_rank{r}.json").read_text()) for r in (0, 1)]
    assert [(p["rank"], p["world"]) for p in probes] == [(0, 2), (1, 2)]
    sizes = probes[0]["sizes"]
    n = sizes["train"]
    for epoch in ("0", "1"):
        a, b = (p["train"][epoch] for p in probes)
        assert len(a) == len(b) == math.ceil(n / 2)  # the same number of batches on both ranks
        assert set(a) | set(b) == set(range(n))  # together the whole epoch...
        assert len(set(a) & set(b)) == n % 2 and len(set(a)) == len(a) and len(set(b)) == len(b)  # ...disjoint but for the padding
    assert probes[0]["train"]["0"] != probes[0]["train"]["1"]  # a new order every epoch
    # one drawn run seed; each rank its own augmentation and dropout draws, rank 0 the single-process ones
    seeds = [p["seeds"] for p in probes]
    for epoch in ("0", "1"):
        (r0, r1), e = (x[epoch] for x in seeds), int(epoch)
        assert (r0["run"], r0["data_run"]) == (r1["run"], r1["data_run"])
        assert (r0["augment"], r0["dropout"]) == (epoch_seed(r0["data_run"], e, 1), epoch_seed(r0["run"], e, 2))
        assert r1["augment"] != r0["augment"] and r1["dropout"] != r0["dropout"] and len({r0["augment"], r0["dropout"], r1["augment"], r1["dropout"]}) == 4
    assert all(probes[0]["val"][e] + probes[1]["val"][e] == sizes["val"] for e in ("0", "1"))
    # two tests (the last and the best weights); each face on exactly one rank
    assert [x + y for x, y in zip(probes[0]["test"], probes[1]["test"])] == [sizes["test"]] * 2
    res = json.loads((out / "results.json").read_text())
    assert res["status"] == "completed" and res["seed"] is None  # nothing fake recorded
    assert sum(map(sum, res["confusion_matrix"])) == sizes["test"]  # not 2x
    with open(out / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 and all(math.isfinite(float(r[c])) for r in rows for c in ("train_loss", "val_loss", "val_acc"))
