"""``python -m fer_sweep [overrides]``: train (or, with ``-m``, sweep) as configured in ``conf/``."""

import sys

from fer_sweep.config import quiet_schema_warning, register_resolvers


def cli() -> None:
    from fer_sweep.group_options import unknown_option

    problem = unknown_option(sys.argv[1:])
    if problem:  # before Hydra: one line, and no job of a sweep runs
        print(f"fer_sweep: error: {problem}", file=sys.stderr)
        sys.exit(2)
    register_resolvers()
    quiet_schema_warning()
    from fer_sweep import train
    from fer_sweep.sweep import state

    train.main()
    if state.FAILED:
        print(f"fer_sweep: {len(state.FAILED)} job(s) did not complete: " + "; ".join(state.FAILED), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    cli()
