"""The ``rayfleet`` parser: version, and help for every command."""

from __future__ import annotations

import pytest

from rayfleet.cli.main import main
from rayfleet.platform.constants import PACKAGE_VERSION

COMMANDS = [
    [],
    ["up"],
    ["models"],
    ["models", "ls"],
    ["models", "push"],
    ["demo"],
    ["demo", "build"],
    ["check"],
    ["validate"],
    ["rollout"],
    ["batch"],
    ["reference"],
    ["reference", "build"],
]


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"rayfleet {PACKAGE_VERSION}\n"


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    assert f"usage: rayfleet {' '.join(command)}".rstrip() in capsys.readouterr().out


def test_store_commands_document_every_way_to_name_the_store(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for command in (
        ["models", "ls"],
        ["validate"],
        ["batch"],
        ["demo", "build"],
        ["reference", "build"],
    ):
        with pytest.raises(SystemExit):
            main([*command, "--help"])
        out = capsys.readouterr().out
        assert all(word in out for word in ("--store", "--config", "RAYFLEET_STORE"))
