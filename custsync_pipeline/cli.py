"""The ``custsync`` console script: sandbox, demo run, identity tools, review queues.

Each area adds its own subcommands through a ``register(subparsers)`` function
in its module (listed in ``_COMMAND_MODULES``), so this file stays a thin index.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# modules exposing ``register(subparsers: argparse._SubParsersAction) -> None``
_COMMAND_MODULES = (
    "custsync_pipeline.sandbox.cli",
    "custsync_pipeline.cli_run",
    "custsync_pipeline.cli_identity",
    "custsync_pipeline.cli_golden",
    "custsync_pipeline.cli_review",
    "custsync_pipeline.cli_forget",
    "custsync_pipeline.cli_status",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="custsync", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for mod_name in _COMMAND_MODULES:
        try:
            mod = importlib.import_module(mod_name)
        except ModuleNotFoundError as exc:
            if exc.name == mod_name:
                continue  # area not built yet
            raise
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from custsync_pipeline.config import ConfigError
    from custsync_pipeline.store.db import StateDBError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    # a config mistake names the key, a state DB that is missing, empty or unreachable names
    # the URL (password hidden): a message and exit code 2, not a traceback
    except (ConfigError, StateDBError) as exc:
        print(f"custsync {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
