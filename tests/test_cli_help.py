"""Every command and group of the CLI contract exists and has help text."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from pipeline.cli import main

CONTRACT = [
    ["demo"],
    ["run"],
    ["daemon"],
    ["feeds", "list"],
    ["feeds", "add"],
    ["feeds", "remove"],
    ["feeds", "import"],
    ["feeds", "export"],
    ["ingest"],
    ["stories"],
    ["story"],
    ["extract"],
    ["figures"],
    ["drift"],
    ["alerts"],
    ["articles"],
]


def _commands(group: click.Group, prefix: list[str]) -> list[list[str]]:
    out = []
    for name, cmd in group.commands.items():
        out.append([*prefix, name])
        if isinstance(cmd, click.Group):
            out.extend(_commands(cmd, [*prefix, name]))
    return out


def test_contract_commands_exist() -> None:
    assert all(c in _commands(main, []) for c in CONTRACT)


@pytest.mark.parametrize("path", _commands(main, []), ids=" ".join)
def test_every_command_has_help(path: list[str]) -> None:
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    cmd: click.Command = main
    for name in path:
        assert isinstance(cmd, click.Group)
        cmd = cmd.commands[name]
    assert cmd.help and cmd.help.strip()
    for param in cmd.params:
        if isinstance(param, click.Option):
            assert param.help, f"{' '.join(path)} {param.opts} has no help"


LISTINGS = [["feeds", "list"], ["stories"], ["drift"], ["alerts"], ["articles"]]


@pytest.mark.parametrize("path", LISTINGS, ids=" ".join)
def test_listings_take_every_format(path: list[str]) -> None:
    cmd: click.Command = main
    for name in path:
        assert isinstance(cmd, click.Group)
        cmd = cmd.commands[name]
    fmt = next(p for p in cmd.params if p.name == "fmt")
    assert isinstance(fmt.type, click.Choice)
    assert set(fmt.type.choices) == {"table", "json", "csv"}


@pytest.mark.parametrize(
    "command", [["status"], ["stories"], ["drift"], ["alerts"], ["feeds", "list"]]
)
def test_listing_commands_start_without_the_fetching_and_analysis_stack(
    command: list[str], tmp_path: Path
) -> None:
    # HTTP, extraction, figures and stories cost about 0.4 s of imports (half of such a
    # command's time) and listing commands need none of them
    heavy = ("pipeline.run", "pipeline.fetch", "trafilatura", "httpx", "numpy", "rapidfuzz")
    args = ["--db", f"sqlite:///{tmp_path / 'list.db'}", *command]
    code = (
        "import sys\n"
        "from pipeline.cli import main\n"
        f"main({args!r}, standalone_mode=False)\n"
        f"print('LOADED', sorted(m for m in {heavy!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines()[-1] == "LOADED []", out.stdout + out.stderr
