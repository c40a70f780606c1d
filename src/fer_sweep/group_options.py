"""Check the command line's config-group choices (``scheduler=step,bogus``) before Hydra starts.

Hydra reports an unknown option in twelve lines (the search path, a hint about HYDRA_FULL_ERROR),
and in a sweep only when it composes that job, after the earlier jobs have run.  Checked here,
against the YAML files of the packaged ``conf/``, a typo costs one line and nothing runs.
"""

from __future__ import annotations

from importlib import resources
from typing import Sequence

CONF_PACKAGE = "fer_sweep.conf"
SKIPPED_FLAGS = ("--config-dir", "-cd", "--config-path", "-cp", "--config-name", "-cn")
"""With another config source on the command line, the packaged groups are not the whole truth."""


def group_options(package: str = CONF_PACKAGE) -> dict[str, list[str]]:
    """``{group: [option, ...]}`` of the packaged config groups (``hydra/...`` left to Hydra)."""
    root = resources.files(package)
    out: dict[str, list[str]] = {}
    for entry in root.iterdir():
        if entry.is_dir() and entry.name not in ("hydra", "__pycache__"):
            out[entry.name] = sorted(f.name[:-5] for f in entry.iterdir() if f.name.endswith(".yaml"))
    return out


def unknown_option(argv: Sequence[str], package: str = CONF_PACKAGE) -> str | None:
    """The one-line error for the first override that picks an option its group does not have
    (``scheduler=bogus``, or one value of ``-m scheduler=step,bogus``); ``None`` when all exist or
    the command line is one this check does not understand (Hydra then says what it says)."""
    if any(a.split("=", 1)[0] in SKIPPED_FLAGS for a in argv):
        return None
    items = [a for a in argv if not a.startswith("-") and "=" in a]
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        overrides = OverridesParser.create().parse_overrides(items)
    except Exception:  # a grammar error: Hydra's own message names it
        return None
    groups = group_options(package)
    for o in overrides:
        key = o.key_or_group
        if key not in groups or o.is_delete():
            continue
        try:
            values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
        except Exception:  # an interval or a glob: not a list of names
            continue
        for value in values:
            if value not in groups[key] and value not in ("null", "None"):
                shown = f"{key}={value} (in {o.input_line})" if o.is_sweep_override() else f"{key}={value}"
                return f"{shown}: no such option in conf/{key}/; expected one of {', '.join(groups[key])}"
    return None
