"""Where the store commands find their store: --store, --config, RAYFLEET_STORE."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rayfleet.cli.check import RAYFLEET_IMPORT_PATH
from rayfleet.cli.main import main
from rayfleet.cli.serve_config import store_of_config
from rayfleet.cli.store_option import STORE_ENV
from rayfleet.platform.errors import ConfigError


def _app(
    name: str | None, store: str | None, import_path: str = RAYFLEET_IMPORT_PATH
) -> dict[str, object]:
    app: dict[str, object] = {"import_path": import_path, "args": {}}
    if name is not None:
        app["name"] = name
    if store is not None:
        app["args"] = {"store": store}
    return app


def _config(tmp_path: Path, *apps: dict[str, object]) -> str:
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump({"applications": list(apps)}))
    return str(path)


def _store(tmp_path: Path, name: str) -> str:
    folder = tmp_path / name
    folder.mkdir()
    return str(folder)


@pytest.fixture(autouse=True)
def _no_store_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(STORE_ENV, raising=False)


def _listed_store(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("no models in ")
    return out.removeprefix("no models in ").strip()


def test_store_flag_wins_over_config_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    flag, config_store, env = (_store(tmp_path, n) for n in ("flag", "config", "env"))
    config = _config(tmp_path, _app("rayfleet", config_store))
    monkeypatch.setenv(STORE_ENV, env)
    argv = ["models", "ls", "--store", flag, "--config", config]
    assert _listed_store(capsys, argv) == flag


def test_config_wins_over_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config_store, env = _store(tmp_path, "config"), _store(tmp_path, "env")
    config = _config(tmp_path, _app("rayfleet", config_store))
    monkeypatch.setenv(STORE_ENV, env)
    assert _listed_store(capsys, ["models", "ls", "--config", config]) == config_store


def test_environment_when_no_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env = _store(tmp_path, "env")
    monkeypatch.setenv(STORE_ENV, env)
    assert _listed_store(capsys, ["models", "ls"]) == env


@pytest.mark.parametrize(
    "argv",
    [
        ["models", "ls"],
        ["models", "push", "folder", "--model", "digits", "--version", "v4"],
        ["demo", "build"],
        ["validate", "--model", "digits", "--candidate", "v2", "--baseline", "v1"],
        ["batch", "in.parquet", "out", "--model", "digits", "--version", "v1"],
    ],
    ids=lambda argv: " ".join(argv[:2]),
)
def test_no_store_is_one_line_naming_every_way(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    for way in ("--store", "--config", STORE_ENV):
        assert way in err


def test_empty_environment_variable_is_unset(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(STORE_ENV, "")
    assert main(["models", "ls"]) == 2
    assert "no model store" in capsys.readouterr().err


def test_app_picks_one_of_several(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blue, green = _store(tmp_path, "blue"), _store(tmp_path, "green")
    config = _config(tmp_path, _app("blue", blue), _app("green", green))
    argv = ["models", "ls", "--config", config, "--app", "green"]
    assert _listed_store(capsys, argv) == green


def test_several_apps_without_app_lists_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, _app("blue", "a"), _app("green", "b"))
    assert main(["models", "ls", "--config", config]) == 2
    err = capsys.readouterr().err
    assert "blue, green" in err
    assert "--app NAME" in err


def test_unknown_app_lists_the_known(tmp_path: Path) -> None:
    config = _config(tmp_path, _app("blue", "a"), _app(None, "b"))
    with pytest.raises(ConfigError, match=r"no rayfleet application named 'red'.*"):
        store_of_config(config, "red")
    with pytest.raises(ConfigError, match="blue, default"):
        store_of_config(config, "red")


def test_app_without_name_is_default(tmp_path: Path) -> None:
    config = _config(tmp_path, _app(None, "build/models"))
    assert store_of_config(config, "default") == "build/models"


def test_other_applications_are_not_counted(tmp_path: Path) -> None:
    config = _config(
        tmp_path, _app("web", None, import_path="web.app:build"), _app("ml", "s")
    )
    assert store_of_config(config) == "s"


def test_config_without_rayfleet_application(tmp_path: Path) -> None:
    config = _config(tmp_path, _app("web", "s", import_path="web.app:build"))
    with pytest.raises(ConfigError, match=RAYFLEET_IMPORT_PATH):
        store_of_config(config)


def test_config_without_store_names_the_field(tmp_path: Path) -> None:
    config = _config(tmp_path, _app("web", "s", "web.app:build"), _app("ml", None))
    with pytest.raises(ConfigError, match=r"applications\.1\.args\.store: required"):
        store_of_config(config)


@pytest.mark.parametrize("text", ["not: [closed", "just a string", "{}"])
def test_unreadable_config(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"bad\.yaml"):
        store_of_config(str(path))


def test_missing_config_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "nope.yaml")
    assert main(["models", "ls", "--config", missing]) == 2
    assert "nope.yaml: cannot read" in capsys.readouterr().err


def test_app_needs_config(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(STORE_ENV, "build/models")
    assert main(["models", "ls", "--app", "blue"]) == 2
    assert "give --config" in capsys.readouterr().err


def test_demo_config_names_its_store() -> None:
    demo = Path(__file__).parents[3] / "configs" / "demo.yaml"
    assert store_of_config(str(demo)) == "build/models"
