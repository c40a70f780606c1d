"""``python -m fer_sweep [overrides]``: train (or, with ``-m``, sweep) as configured in ``conf/``."""

import sys

from fer_sweep.config import quiet_schema_warning, register_resolvers


def cli() -> None:
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
