"""``python -m fer_sweep [overrides]``: train (or, with ``-m``, sweep) as configured in ``conf/``."""

import sys
import warnings

from fer_sweep.config import register_resolvers


def cli() -> None:
    register_resolvers()
    # conf/hydra/launcher/joblib.yaml deliberately shares the plugin's name (so `hydra/launcher=joblib`
    # gets our defaults); Hydra warns about the schema match, which is expected here.
    warnings.filterwarnings("ignore", message=".*validated against ConfigStore schema.*")
    from fer_sweep import train
    from fer_sweep.sweep import state

    train.main()
    if state.FAILED:
        print(f"fer_sweep: {len(state.FAILED)} job(s) did not complete: " + "; ".join(state.FAILED), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    cli()
