"""Config composition: every optimizer x scheduler, seeding, validation, launchers."""

import itertools

import hydra
import pytest
import torch
from hydra.errors import MissingConfigException
from omegaconf import OmegaConf

from fer_sweep.config import ConfigError, run_id, validate
from fer_sweep.train import seed_run
from helpers import compose_cfg

OPTIMIZERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD, "adamw": torch.optim.AdamW}
SCHEDULERS = {
    "step": torch.optim.lr_scheduler.StepLR,
    "multistep": torch.optim.lr_scheduler.MultiStepLR,
    "cosine": torch.optim.lr_scheduler.CosineAnnealingLR,
    "plateau": torch.optim.lr_scheduler.ReduceLROnPlateau,
    "none": None,
}


@pytest.mark.parametrize("opt,sched", list(itertools.product(OPTIMIZERS, SCHEDULERS)))
def test_every_optimizer_scheduler_pair_builds(opt, sched):
    cfg = compose_cfg([f"optimizer={opt}", f"scheduler={sched}", "trainer.max_epochs=37"])
    model = hydra.utils.instantiate(cfg.model, class_names=[str(i) for i in range(7)])
    conf = model.configure_optimizers()
    optimizer = conf["optimizer"] if isinstance(conf, dict) else conf
    assert type(optimizer) is OPTIMIZERS[opt]
    assert optimizer.param_groups[0]["lr"] == cfg.optimizer.lr
    if SCHEDULERS[sched] is None:
        assert not isinstance(conf, dict)
        return
    sch = conf["lr_scheduler"]
    assert type(sch["scheduler"]) is SCHEDULERS[sched]
    assert sch["interval"] == "epoch"
    if sched == "plateau":
        assert sch["monitor"] == "val/acc" and sch["scheduler"].mode == "max"
    if sched == "cosine":
        assert sch["scheduler"].T_max == 37  # follows trainer.max_epochs
    if sched == "step":
        assert (sch["scheduler"].step_size, sch["scheduler"].gamma) == (10, 0.1)
    if sched == "multistep":
        assert sorted(sch["scheduler"].milestones) == [10, 20, 50]


def test_defaults_match_the_study():
    cfg = compose_cfg()
    assert cfg.optimizer.lr == 0.001 and cfg.optimizer._target_ == "torch.optim.Adam"
    assert cfg.trainer.max_epochs == 200 and cfg.seed == 0
    assert cfg.model.net.name == "deep_emotion" and cfg.data.num_classes == 7


def test_seed_zero_seeds():
    cfg = compose_cfg(["seed=0"])
    torch.manual_seed(1234)
    seed_run(cfg)
    a = torch.rand(5)
    torch.manual_seed(0)
    assert torch.equal(a, torch.rand(5))


def test_seed_null_leaves_rng_alone():
    cfg = compose_cfg(["seed=null"])
    torch.manual_seed(1234)
    seed_run(cfg)
    a = torch.rand(5)
    torch.manual_seed(1234)
    assert torch.equal(a, torch.rand(5))


@pytest.mark.parametrize("override", ["optimizer.lr=0", "optimizer.lr=-0.1", "optimizer.lr=abc", "optimizer.lr=nan", "trainer.max_epochs=0",
                                      "trainer.max_epochs=1.5", "trainer.max_epochs=true", "data.batch_size=0", "data.batch_size=abc",
                                      "data.eval_batch_size=0", "data.num_classes=5", "seed=true", "seed=abc", "seed=1.5", "threads=0",
                                      "threads=-2", "threads=100000", "model.label_smoothing=1.5", "model.label_smoothing=abc"])
def test_invalid_values_are_rejected_before_training(override):
    """Each bad value fails in one line that starts with the key=value given and says what is expected."""
    cfg = compose_cfg([override])
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    key, value = override.split("=")
    message = str(err.value)
    assert message.startswith(f"{key}=") and value.lower() in message.split(":")[0].lower() and ": expected " in message and "\n" not in message


@pytest.mark.parametrize("overrides", [
    ["data.subset=abc"], ["data.subset=2"], ["data.split_seed=abc"], ["model.net.dropout=2"], ["optimizer.weight_decay=-1"],
    ["optimizer=sgd", "optimizer.momentum=1.5"], ["trainer.precision=bf17"],
    ["scheduler=step", "scheduler.partial.gamma=abc"], ["scheduler=step", "scheduler.partial.step_size=0"],
    ["scheduler=multistep", "scheduler.partial.milestones=[20,10]"], ["scheduler=multistep", "scheduler.partial.milestones=abc"],
    ["scheduler=plateau", "scheduler.partial.patience=-1"], ["scheduler=plateau", "scheduler.partial.factor=1.5"],
    ["scheduler=cosine", "scheduler.partial.eta_min=-1"],
])
def test_more_invalid_values_name_their_key(overrides):
    """Found in review: these reached the library (a bare "could not convert string to float",
    torch's "Invalid weight_decay value") or, for a scheduler, failed only at the epoch that first
    used the value, or never within a short run."""
    with pytest.raises(ConfigError) as err:
        validate(compose_cfg(overrides))
    key, value = overrides[-1].split("=")
    message = str(err.value)
    assert message.startswith(f"{key}={value}: expected ") and "\n" not in message, message


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_gpu_accelerator_without_a_gpu_is_one_line():
    with pytest.raises(ConfigError, match=r"^trainer.accelerator=gpu: no CUDA GPU is visible"):
        validate(compose_cfg(["trainer=gpu"]))


@pytest.mark.parametrize("choice", ["scheduler=step", "scheduler=multistep", "scheduler=cosine", "scheduler=plateau", "scheduler=none",
                                    "optimizer=adam", "optimizer=adamw", "optimizer=sgd", "model=vgg", "experiment=faithful",
                                    "experiment=deep_emotion_plus", "experiment=vgg", "experiment=scheduler_study", "trainer.precision=bf16-mixed",
                                    "data.subset=1", "data.subset=0.05"])
def test_every_shipped_choice_passes_validation(choice):
    """The checks are not stricter than the project's own configurations."""
    validate(compose_cfg([choice]))


def test_unknown_group_option_is_an_error():
    with pytest.raises(MissingConfigException, match="scheduler"):
        compose_cfg(["scheduler=warmup_magic"])


def test_experiments_compose():
    study = compose_cfg(["experiment=scheduler_study"], hydra_cfg=True)
    assert study.hydra.sweeper.params == {"scheduler": "step,multistep,cosine,plateau", "seed": "0,1,2,3,4"}
    assert study.trainer.max_epochs == 200
    vgg = compose_cfg(["experiment=vgg"])
    assert vgg.model.net.name == "vgg" and vgg.augment.hflip == 0.5
    faithful = compose_cfg(["experiment=faithful"])
    assert faithful.augment.get("hflip", 0.0) == 0.0 and faithful.scheduler.name == "cosine"
    assert faithful.model.net.dropout == 0.5 and faithful.trainer.max_epochs == 200  # the paper's dropout, the study's length
    plus = compose_cfg(["experiment=deep_emotion_plus"])
    assert plus.augment.hflip == 0.5 and plus.model.label_smoothing == 0.1 and plus.model.fc_weight_decay == 0.001
    assert plus.model.net.dropout == 0.0  # augmented, the small network underfits: no dropout (docs/cpu_runs/SELECTION.md)


def test_launchers_compose():
    joblib = compose_cfg(["hydra/launcher=joblib"], hydra_cfg=True).hydra.launcher
    assert joblib._target_.endswith("JoblibLauncher") and joblib.n_jobs == 2  # not one job per core
    slurm = compose_cfg(["hydra/launcher=slurm"], hydra_cfg=True).hydra.launcher
    assert slurm._target_.endswith("SlurmLauncher") and slurm.gpus_per_node == 1
    ddp = compose_cfg(["trainer=ddp"])
    assert ddp.trainer.strategy == "ddp" and ddp.trainer.devices == 2


def test_output_folders_carry_a_per_launch_token():
    cfg = compose_cfg([], hydra_cfg=True)
    assert "${fer_run_id:}" in OmegaConf.to_container(cfg.hydra.sweep, resolve=False)["dir"]
    token = run_id()
    assert token == run_id() and len(token) == 6


@pytest.mark.parametrize("choice", ["default", "none"])
def test_both_callback_sets_flush_subnormals(choice):
    """The flush changes speed, not results, so the minimal set (GPU and quick grids) keeps it too."""
    from fer_sweep.callbacks import FlushSubnormals

    cfg = compose_cfg([f"callbacks={choice}"])
    assert isinstance(hydra.utils.instantiate(cfg.callbacks.flush_subnormals), FlushSubnormals)
    if choice == "none":
        assert set(cfg.callbacks) == {"model_checkpoint", "last_checkpoint", "epoch_metrics", "flush_subnormals"}


def _sweep_cfg(task: list[str]):
    """A composed config as a sweep's launcher sees it: ``task`` as typed on the command line."""
    cfg = compose_cfg([t for t in task if "," not in t], hydra_cfg=True)
    OmegaConf.set_struct(cfg, False)
    cfg.hydra.overrides.task = task
    return cfg


def test_sweep_whose_jobs_would_share_a_folder_is_refused():
    from fer_sweep.sweep.hydra_callback import shared_job_folder

    assert shared_job_folder(_sweep_cfg(["experiment=scheduler_study"])) is None  # 20 distinct folders
    assert shared_job_folder(_sweep_cfg(["scheduler=step,cosine", "seed=0,1", "threads=1"])) is None
    clash = shared_job_folder(_sweep_cfg(["scheduler=step,cosine", "threads=1,2"]))
    assert clash is not None and "(threads=1 and threads=2)" in clash and "'scheduler=step'" in clash
    assert "trainer is left out" in shared_job_folder(_sweep_cfg(["trainer=cpu,default"]))
    assert "lists the job 'seed=0' twice" in shared_job_folder(_sweep_cfg(["seed=0,0"]))


def test_sweep_cli_refuses_shared_folders_before_any_job(tmp_path):
    from helpers import run_cli

    sweep = tmp_path / "sweep"
    proc = run_cli(["-m", "threads=1,2", "trainer.max_epochs=1", f"hydra.sweep.dir={sweep}"], timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "fer_sweep: two jobs of this sweep (threads=1 and threads=2) would share the folder 'trainer.max_epochs=1': "
        "threads is left out of job folder names (hydra.job.config.override_dirname.exclude_keys); sweep it in separate launches"
    ]
    assert not sweep.exists()
