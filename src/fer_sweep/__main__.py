"""``python -m fer_sweep [overrides]``: train (or, with ``-m``, sweep) as configured in ``conf/``."""

import sys

from fer_sweep.config import quiet_schema_warning, register_resolvers


def register_launchers() -> None:
    """Make our launchers (``hydra/launcher=packed`` and ``joblib``) known to Hydra.  Hydra finds
    launchers by listing the ``hydra_plugins`` package; an editable install (``pip install -e .``)
    reaches our part of it through a setuptools path hook that cannot be listed, so the classes are
    registered by name (a wheel install is found by the listing too; registering again changes nothing)."""
    from hydra.core.plugins import Plugins
    from hydra_plugins.fer_sweep_launchers.joblib_launcher import JoblibLauncher
    from hydra_plugins.fer_sweep_launchers.packed_launcher import PackedLauncher

    for cls in (PackedLauncher, JoblibLauncher):
        Plugins.instance().class_name_to_class.setdefault(f"{cls.__module__}.{cls.__name__}", cls)


def cli() -> None:
    from fer_sweep.group_options import unknown_option

    problem = unknown_option(sys.argv[1:])
    if problem:  # before Hydra: one line, and no job of a sweep runs
        print(f"fer_sweep: error: {problem}", file=sys.stderr)
        sys.exit(2)
    register_resolvers()
    quiet_schema_warning()
    register_launchers()
    from fer_sweep import train
    from fer_sweep.sweep import state

    train.main()
    if state.FAILED:
        print(f"fer_sweep: {len(state.FAILED)} job(s) did not complete: " + "; ".join(state.FAILED), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    cli()
