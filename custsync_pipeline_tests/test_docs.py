"""The README documents every config key of the generic REST and file connectors and of
the HTTP layer: a key added in code without a line in its README table fails here; its
multiprocess run config is the one the code hands out."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from pydantic import BaseModel

from custsync_pipeline.connectors.file import FileConnector
from custsync_pipeline.connectors.http import HttpSettings
from custsync_pipeline.connectors.rest import RestOptions

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def _section(title: str) -> str:
    start = README.index(f"#### {title}")
    end = README.find("\n#", start + 5)
    return README[start:end]


def _documented(section: str) -> set[str]:
    """Keys named in the first column of the section's table (`a` / `b`, `c.d`)."""
    keys: set[str] = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            keys |= set(re.findall(r"`([a-z_][a-z0-9_.]*)`", line.split("|")[1]))
    return keys


def _model_keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for name, field in model.model_fields.items():
        sub = field.annotation
        nested = next(
            (
                a
                for a in getattr(sub, "__args__", (sub,))
                if isinstance(a, type) and issubclass(a, BaseModel)
            ),
            None,
        )
        if nested is not None:
            keys |= _model_keys(nested, f"{prefix}{name}.")
        else:
            keys.add(f"{prefix}{name}")
    return keys


def test_every_rest_option_is_in_the_readme() -> None:
    missing = (
        _model_keys(RestOptions)
        - {"sandbox_system"}
        - _documented(_section("Generic REST connector"))
    )
    assert missing == set()


def test_every_file_option_is_in_the_readme() -> None:
    missing = (
        set(FileConnector.OPTIONS)
        - {"sandbox_system", "http"}
        - _documented(_section("File connector"))
    )
    assert missing == set()


def test_every_http_setting_is_in_the_readme() -> None:
    keys = {f.name for f in dataclasses.fields(HttpSettings)}
    assert keys - _documented(_section("HTTP options")) == set()


def test_the_readme_multiprocess_run_config_is_the_one_the_tests_run():
    import textwrap

    import yaml

    from custsync_pipeline.definitions import multiprocess_run_config

    block = re.search(r"```yaml\n(\s*execution:\n.*?)```", README, flags=re.S)
    assert block, "README: the multiprocess run config block is gone"
    assert yaml.safe_load(textwrap.dedent(block.group(1))) == multiprocess_run_config(4)
