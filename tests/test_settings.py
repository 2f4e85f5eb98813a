"""The settings registry (pgq/settings.py): every PGQ_* name used in the repository is in it,
the README's table is what it generates, and read() parses or refuses each kind."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from pgq import settings
from pgq.config import ConfigError, database_url
from pgq.devtools import settings_table

from .support import REPO

NAME = re.compile(r"(?<![A-Za-z0-9_])PGQ_[A-Z0-9_]*[A-Z0-9](?![A-Za-z0-9_])")
#: Where PGQ_ names are used: the code, deployment, benchmarks, tests, CI and the docs.
PLACES = ("pgq", "deploy", "benchmarks", "tests", ".ci", "README.md", "pyproject.toml")


def tracked_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", *PLACES],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line for line in out.splitlines() if (REPO / line).is_file()]


def test_every_pgq_name_in_the_repository_is_a_registered_setting() -> None:
    used: dict[str, set[str]] = {}
    for path in tracked_files():
        try:
            text = (REPO / path).read_text()
        except UnicodeDecodeError:
            continue
        for name in NAME.findall(text):
            used.setdefault(name, set()).add(path)
    assert "PGQ_DATABASE_URL" in used  # the scan sees something
    missing = {name: sorted(where) for name, where in used.items() if name not in settings.BY_NAME}
    assert not missing, f"add these to pgq/settings.py: {missing}"


def test_the_readme_table_is_generated_from_the_registry() -> None:
    readme = (REPO / "README.md").read_text()
    assert settings_table.replaced(readme) == readme, (
        "README.md's settings table is stale: python -m pgq.devtools.settings_table --write"
    )
    check = subprocess.run(
        [sys.executable, "-m", "pgq.devtools.settings_table", "--check"], cwd=REPO, check=False
    )
    assert check.returncode == 0


def test_a_stale_table_is_detected_and_rewritten() -> None:
    readme = (REPO / "README.md").read_text()
    stale = readme.replace("| `PGQ_POOL_SIZE` | 20 |", "| `PGQ_POOL_SIZE` | 19 |")
    assert stale != readme
    assert settings_table.replaced(stale) == readme


def test_each_setting_is_documented() -> None:
    for s in settings.SETTINGS:
        assert s.name.startswith("PGQ_") and s.help and s.used_by, s
        assert s.kind in (str, int, float, list), s
        assert s.default is None or s.kind is list or isinstance(s.default, s.kind), s


def test_read_parses_each_kind_and_treats_empty_as_unset() -> None:
    env = {
        "PGQ_PORT": "4000",
        "PGQ_MAX_WAIT_SECONDS": "2.5",
        "PGQ_API_TOKENS": " a, ,b ",
        "PGQ_HOST": "",
        "PGQ_LOG_FORMAT": "Console",
    }
    assert settings.read("PGQ_PORT", env) == 4000
    assert settings.read("PGQ_MAX_WAIT_SECONDS", env) == 2.5
    assert settings.read("PGQ_API_TOKENS", env) == ("a", "b")
    assert settings.read("PGQ_HOST", env) == "127.0.0.1"
    assert settings.read("PGQ_LOG_FORMAT", env) == "console"
    assert settings.read("PGQ_CONCURRENCY", env) is None


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("PGQ_PORT", "30o1", "not an integer"),
        ("PGQ_GRACE_SECONDS", "soon", "not a number"),
        ("PGQ_LOG_LEVEL", "loud", "not one of DEBUG, INFO"),
    ],
)
def test_a_bad_value_is_a_config_error_naming_the_variable(
    name: str, value: str, words: str
) -> None:
    with pytest.raises(ConfigError, match=f"{name}='{value}' is {words}"):
        settings.read(name, {name: value})


def test_the_database_url_falls_back_to_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGQ_DATABASE_URL", raising=False)
    monkeypatch.setenv("DATABASE_URL", "postgresql://fallback/db")
    assert database_url() == "postgresql://fallback/db"
    monkeypatch.setenv("PGQ_DATABASE_URL", "postgresql://first/db")
    assert database_url() == "postgresql://first/db"
    assert database_url("postgresql://flag/db") == "postgresql://flag/db"
    monkeypatch.delenv("PGQ_DATABASE_URL")
    monkeypatch.delenv("DATABASE_URL")
    with pytest.raises(ConfigError, match="no database configured"):
        database_url()


def test_the_cli_reports_a_bad_setting_in_one_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pgq", "coordinator"],
        env={"PATH": "/usr/bin:/bin", "PGQ_PORT": "eighty", "PGQ_DATABASE_URL": "postgresql://x/y"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "pgq: PGQ_PORT='eighty' is not an integer"
