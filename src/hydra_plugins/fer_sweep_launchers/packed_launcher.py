"""``hydra/launcher=packed``: a sweep's Deep-Emotion jobs trained together in one process.

Hydra only instantiates launchers from the ``hydra_plugins`` package, so this thin class lives
here; the training is :mod:`fer_sweep.train_packed`.  Every job first goes through Hydra's own
``run_job`` with a task that only records its resolved config: that makes the job's folder and its
``.hydra/`` files exactly as the basic launcher would.  Jobs that
:func:`fer_sweep.train_packed.unpackable` refuses then run one by one with the real task; the rest
are grouped by :func:`fer_sweep.train_packed.pack_signature` into packs of at most ``max_jobs``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)


class PackedLauncher(Launcher):
    def __init__(self, max_jobs: int = 20, pack_on_cpu: bool = False) -> None:
        if int(max_jobs) < 1:
            raise ValueError(f"hydra.launcher.max_jobs={max_jobs}; expected a number of jobs per pack >= 1")
        self.max_jobs, self.pack_on_cpu = int(max_jobs), bool(pack_on_cpu)
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def _job_config(self, idx: int, overrides: Sequence[str]) -> DictConfig:
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(cfg):
            cfg.hydra.job.id = idx
            cfg.hydra.job.num = idx
        return cfg

    def _run(self, sweep_config: DictConfig, task: TaskFunction, callbacks: bool = True) -> JobReturn:
        """Hydra's ``run_job``; ``callbacks=False`` for the capture pass, whose job has not run yet,
        so that no callback sees it start and end (the real task's pass, for jobs run alone, does)."""
        context = self.hydra_context
        if not callbacks:
            from hydra._internal.callbacks import Callbacks

            context = HydraContext(config_loader=context.config_loader, callbacks=Callbacks())
        return run_job(hydra_context=context, task_function=task, config=sweep_config,
                       job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from fer_sweep.train_packed import pack_signature, run_pack, unpackable

        setup_globals()
        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info("Preparing %d jobs for packed training", len(job_overrides))
        returns: list[JobReturn] = []
        resolved: list[DictConfig] = []
        raw: list[DictConfig] = []
        log_files: list[Path | None] = []
        configs: list[DictConfig] = []
        for i, overrides in enumerate(job_overrides):
            idx = initial_job_idx + i
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
            sweep_config = self._job_config(idx, overrides)
            captured: dict[str, Any] = {}

            def capture(cfg: DictConfig) -> None:  # resolved while HydraConfig is this job's
                from hydra.core.hydra_config import HydraConfig

                captured["raw"] = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
                captured["cfg"] = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
                hydra_cfg = HydraConfig.get()
                captured["log"] = Path(hydra_cfg.runtime.output_dir) / f"{hydra_cfg.job.name}.log"

            ret = self._run(sweep_config, capture, callbacks=False)
            if ret.status == JobStatus.FAILED:  # its config did not resolve: the real task will say why
                log.warning("job #%d: %s", idx, ret._return_value)
            returns.append(ret)
            resolved.append(captured.get("cfg"))
            raw.append(captured.get("raw"))
            log_files.append(captured.get("log"))
            configs.append(sweep_config)
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        groups: dict[str, list[int]] = {}
        for i, cfg in enumerate(resolved):
            why = unpackable(cfg, self.pack_on_cpu) if cfg is not None else "its config did not resolve"
            if why is not None:  # a job of its own, with the real task, as the basic launcher runs it
                log.info("job #%d runs alone: %s", initial_job_idx + i, why)
                returns[i] = self._run(self._job_config(initial_job_idx + i, job_overrides[i]), self.task_function)
                configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
                continue
            groups.setdefault(pack_signature(raw[i]), []).append(i)
        for members in groups.values():
            for start in range(0, len(members), self.max_jobs):
                pack = members[start : start + self.max_jobs]
                logs = [log_files[i] if log_files[i] is not None and log_files[i].is_file() else None for i in pack]
                results = run_pack([resolved[i] for i in pack], [list(job_overrides[i]) for i in pack], logs)
                for i, res in zip(pack, results):
                    returns[i].return_value = res.get("best_val_acc")
                    returns[i].status = JobStatus.COMPLETED
        return returns
