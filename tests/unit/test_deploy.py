"""The deploy files: linted, consistent with the lock, and naming only settings that exist.

The linters (hadolint, check-jsonschema with its vendored Compose Specification, actionlint)
come from the locked dev dependencies, next to this interpreter; none needs the network. The
other checks read Containerfile, compose.yaml, .env.example and the workflow as text, so a
setting renamed in Settings, or a uv or Python version bumped in one place only, fails here
rather than in a container build.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML, locked via the dev dependencies
from packaging.specifiers import SpecifierSet

from fraudscore_adapters.settings import ENV_PREFIX, Settings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CONTAINERFILE = ROOT / "Containerfile"
COMPOSE = ROOT / "compose.yaml"
WORKFLOW = ROOT / ".github" / "workflows" / "test.yml"
APP_IMAGE = "fraudscore:local"

LINTERS = {
    "hadolint": ["hadolint", "Containerfile"],
    "compose-spec": [
        "check-jsonschema",
        "--builtin-schema",
        "vendor.compose-spec",
        "compose.yaml",
    ],
    "actionlint": ["actionlint", ".github/workflows/test.yml"],
}


def setting_names() -> set[str]:
    """Every environment name Settings.from_env reads."""
    fields = [f.name for f in dataclasses.fields(Settings)]
    names = {ENV_PREFIX + n.upper() for n in fields if not n.endswith("database_url")}
    return names | {"DATABASE_URL", "MIGRATIONS_DATABASE_URL"}


def default_of(name: str) -> object:
    """The Settings default behind environment name ``name``."""
    return getattr(Settings(), name.removeprefix(ENV_PREFIX).lower())


@pytest.mark.parametrize("linter", LINTERS)
def test_the_deploy_files_pass_their_linter(linter: str) -> None:
    tool, *args = LINTERS[linter]
    executable = BIN / tool
    assert executable.is_file(), f"{tool} missing from {BIN}: run `uv sync --locked`"
    done = subprocess.run(
        [str(executable), *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"{linter}:\n{done.stdout}\n{done.stderr}"


# --- Containerfile ------------------------------------------------------------------------------


def instructions() -> list[str]:
    """The Containerfile's instructions, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", CONTAINERFILE.read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]


def image_arg(name: str) -> str:
    """The default of build argument ``name``."""
    for line in instructions():
        if match := re.fullmatch(rf"ARG {name}=(\S+)", line):
            return match.group(1)
    raise AssertionError(f"Containerfile declares no ARG {name}")


def runtime_stage() -> list[str]:
    """The instructions of the final stage."""
    lines = instructions()
    starts = [i for i, line in enumerate(lines) if line.startswith("FROM ")]
    return lines[starts[-1] :]


def test_the_image_installs_exactly_the_lock() -> None:
    syncs = [line for line in instructions() if re.search(r"\buv sync\b", line)]
    assert len(syncs) >= 2  # dependencies, then the project
    for line in syncs:
        assert "--locked" in line, line
        assert "--no-dev" in line, line
    copies = " ".join(line for line in instructions() if line.startswith("COPY "))
    assert "uv.lock" in copies
    assert ".python-version" in copies  # so uv refuses an interpreter the lock was not made for


def test_the_image_python_matches_python_version_and_the_lock() -> None:
    python = (ROOT / ".python-version").read_text().strip()
    base = image_arg("PYTHON_IMAGE")
    assert re.fullmatch(rf"python:{re.escape(python)}-slim(-\w+)?", base), base
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    assert f"{python}.0" in SpecifierSet(lock["requires-python"])


def test_uv_is_pinned_to_the_same_version_in_the_image_and_in_ci() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    assert image_arg("UV_VERSION") == workflow["env"]["UV_VERSION"]
    assert any('"uv==${UV_VERSION}"' in line for line in instructions())


def test_the_runtime_stage_is_non_root_and_carries_no_build_tools() -> None:
    stage = runtime_stage()
    users = [line.split()[1] for line in stage if line.startswith("USER ")]
    assert users, "the runtime stage sets no USER"
    assert users[-1].split(":")[0] not in {"0", "root"}
    assert not any(re.search(r"\b(uv|pip install|apt-get install)\b", line) for line in stage)
    copied = [line for line in stage if line.startswith("COPY --from=builder")]
    assert copied == ["COPY --from=builder /app/.venv /app/.venv"]
    healthcheck = next(line for line in stage if line.startswith("HEALTHCHECK"))
    assert "/healthcheck" in healthcheck
    assert "urllib" in healthcheck


def image_environment() -> dict[str, str]:
    """The FRAUDSCORE_* (and other) ENV of the runtime stage."""
    env: dict[str, str] = {}
    for line in runtime_stage():
        if line.startswith("ENV "):
            env.update(re.findall(r'(\w+)=("[^"]*"|\S+)', line.removeprefix("ENV ")))
    return {k: v.strip('"') for k, v in env.items()}


def test_the_image_environment_is_valid_settings() -> None:
    env = {k: v for k, v in image_environment().items() if k.startswith(ENV_PREFIX)}
    assert set(env) <= setting_names()
    settings = Settings.from_env(env, dotenv=None)
    assert settings.host == "0.0.0.0"
    assert settings.migrations_dir == Path("/app/migrations")
    assert any(line.startswith("COPY migrations /app/migrations") for line in runtime_stage())


def test_the_build_context_leaves_secrets_and_data_out() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*"  # an allowlist
    included = {p.removeprefix("!").rstrip("/") for p in patterns if p.startswith("!")}
    assert not included & {".env", ".venv", ".git", "data", "data/raw", "data/synthetic"}


# --- compose.yaml ---------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    """compose.yaml, YAML anchors and merge keys resolved."""
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return document


def app_services() -> dict[str, dict[str, Any]]:
    """The services that run the fraudscore image."""
    services: dict[str, dict[str, Any]] = compose()["services"]
    return {name: s for name, s in services.items() if s.get("image") == APP_IMAGE}


def test_compose_runs_migrate_load_features_and_web_from_the_image() -> None:
    services = app_services()
    assert set(services) == {"migrate", "load-features", "web"}
    assert services["migrate"]["command"] == ["migrate"]
    assert services["load-features"]["profiles"] == ["load"]
    web = services["web"]["depends_on"]
    assert web["db"]["condition"] == "service_healthy"
    assert web["migrate"]["condition"] == "service_completed_successfully"
    assert compose()["services"]["db"]["image"] == "postgres:15"


def test_compose_passes_only_settings_the_app_reads() -> None:
    for name, service in app_services().items():
        unknown = set(service["environment"]) - setting_names()
        assert not unknown, f"{name} passes {unknown}, which Settings does not read"


def test_compose_defaults_are_the_settings_defaults() -> None:
    environment = app_services()["web"]["environment"]
    checked = 0
    for key, value in environment.items():
        match = re.fullmatch(rf"\$\{{{key}:-([^}}]*)\}}", str(value))
        if key.startswith(ENV_PREFIX):
            assert match, f"{key}: expected ${{{key}:-default}}, got {value!r}"
            parsed = Settings.from_env({key: match.group(1)}, dotenv=None)
            assert getattr(parsed, key.removeprefix(ENV_PREFIX).lower()) == default_of(key), key
            checked += 1
    assert checked >= 10
    assert "@db:5432/" in environment["DATABASE_URL"]


# --- .env.example -------------------------------------------------------------------------------

EXAMPLE_LINE = re.compile(r"^#?\s*(?:export\s+)?([A-Z][A-Z0-9_]*)=(.*)$")


def example_values() -> list[tuple[str, str]]:
    """Every ``NAME=value`` line of .env.example, commented out or not."""
    lines = (ROOT / ".env.example").read_text().splitlines()
    return [(m.group(1), m.group(2)) for line in lines if (m := EXAMPLE_LINE.match(line))]


def test_env_example_documents_every_setting_and_nothing_else() -> None:
    names = {name for name, _ in example_values()}
    assert names <= setting_names(), names - setting_names()
    assert setting_names() <= names, setting_names() - names


def test_env_example_shows_the_defaults() -> None:
    examples = {"FRAUDSCORE_DATA_FILE"}  # an illustration, not a default
    for name, value in example_values():
        if name.startswith(ENV_PREFIX) and name not in examples:
            parsed = Settings.from_env({name: value}, dotenv=None)
            assert getattr(parsed, name.removeprefix(ENV_PREFIX).lower()) == default_of(name), name


def test_env_example_changes_nothing_until_edited(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text((ROOT / ".env.example").read_text())
    assert Settings.from_env({}, dotenv=dotenv) == Settings()
