"""The deploy files: linted, consistent with the lock, and naming only settings that exist.

The linters (hadolint, check-jsonschema with its vendored Compose Specification, actionlint)
come from the locked dev dependencies, next to this interpreter; none needs the network. The
other checks read Containerfile, compose.yaml, .env.example, the workflow, the db init script
and docs/deploy.md as text, so a setting renamed in Settings, a uv or Python version bumped in
one place only, or the API handed the owner's URL, fails here rather than in a container build.
(The database side of the roles is tests/integration/test_roles.py.)
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML, locked via the dev dependencies
from packaging.specifiers import SpecifierSet

from fraudscore_adapters.settings import ENV_PREFIX, Settings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CONTAINERFILE = ROOT / "Containerfile"
COMPOSE = ROOT / "compose.yaml"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"
ROLES_SCRIPT = ROOT / "deploy" / "postgres-init" / "10-roles.sh"
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


COMPOSE_OVERRIDES = {"FRAUDSCORE_ALLOW_UNPINNED_MODEL": "on"}
"""Settings compose defaults differently on purpose, each explained in compose.yaml: the local
stack's model is trained into the image while building, so no pin exists before the build."""


def test_compose_defaults_are_the_settings_defaults() -> None:
    environment = app_services()["web"]["environment"]
    checked = 0
    for key, value in environment.items():
        match = re.fullmatch(rf"\$\{{{key}:-([^}}]*)\}}", str(value))
        if key.startswith(ENV_PREFIX):
            assert match, f"{key}: expected ${{{key}:-default}}, got {value!r}"
            default = match.group(1)
            checked += 1
            if key in COMPOSE_OVERRIDES:
                assert default == COMPOSE_OVERRIDES[key], key
                before = COMPOSE.read_text().split(f"\n  {key}: ")[0]
                assert key in before, f"{key}: a comment above it should say why"
                continue
            if default == "" and default_of(key) is None:
                continue  # `${NAME:-}` passes an empty value, which the app reads as unset
            parsed = Settings.from_env({key: default}, dotenv=None)
            assert getattr(parsed, key.removeprefix(ENV_PREFIX).lower()) == default_of(key), key
    assert checked >= 10
    assert "@db:5432/" in environment["DATABASE_URL"]


def compose_default(value: str) -> str:
    """``value`` with every ``${NAME:-default}`` replaced by its default."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)


def url_user(url: str) -> str:
    """The user of a ``postgresql://`` URL (compose defaults filled in)."""
    return urlsplit(compose_default(url)).username or ""


def test_compose_gives_the_api_only_the_app_role_and_the_jobs_the_owner() -> None:
    services = app_services()
    web = services["web"]["environment"]
    assert url_user(web["DATABASE_URL"]) == "fraudscore_web"
    assert "MIGRATIONS_DATABASE_URL" not in web
    assert "DB_OWNER_PASSWORD" not in str(web)
    for job in ("migrate", "load-features"):
        environment = services[job]["environment"]
        for name in ("DATABASE_URL", "MIGRATIONS_DATABASE_URL"):
            assert url_user(environment[name]) == "fraudscore_owner", (job, name)
    # Everything else the jobs and the API get is the same.
    shared = {k: v for k, v in web.items() if k != "DATABASE_URL"}
    for job in ("migrate", "load-features"):
        environment = services[job]["environment"]
        assert {k: v for k, v in environment.items() if not k.endswith("DATABASE_URL")} == shared


def test_the_db_service_creates_both_roles_at_its_first_start() -> None:
    db = compose()["services"]["db"]
    assert "./deploy/postgres-init:/docker-entrypoint-initdb.d:ro" in db["volumes"]
    script = ROLES_SCRIPT.read_text()
    for role in ("fraudscore_app", "fraudscore_owner", "fraudscore_web"):
        assert f"CREATE ROLE {role}" in script, role
    assert "CREATE ROLE fraudscore_app NOLOGIN" in script
    assert "GRANT fraudscore_app TO fraudscore_web" in script
    assert "OWNER TO fraudscore_owner" in script
    # The passwords the script reads reach the db service, with the defaults the URLs use.
    services = app_services()
    urls = {
        "DB_OWNER_PASSWORD": services["migrate"]["environment"]["DATABASE_URL"],
        "DB_APP_PASSWORD": services["web"]["environment"]["DATABASE_URL"],
    }
    for variable, url in urls.items():
        assert f"${variable}" in script or f"${{{variable}" in script, variable
        passed = re.fullmatch(rf"\$\{{{variable}:-([^}}]*)\}}", db["environment"][variable])
        assert passed, variable
        assert f":${{{variable}:-{passed.group(1)}}}@db:5432/" in url, variable
    bash = shutil.which("bash")
    if bash:
        done = subprocess.run([bash, "-n", str(ROLES_SCRIPT)], capture_output=True, check=False)
        assert done.returncode == 0, done.stderr


# `-p HOST_PORT:PORT` with no address publishes the port on every interface of the host.
PUBLISH = re.compile(r"(?:-p|--publish)[ =]((?:[0-9.]+:)?\d+:\d+)")


def test_no_example_publishes_a_port_on_every_interface() -> None:
    for path in (DEPLOY_DOC, CONTAINERFILE, WORKFLOW):
        for published in PUBLISH.findall(path.read_text()):
            assert published.startswith("127.0.0.1:"), f"{path.name}: -p {published}"
    for name, service in compose()["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"compose {name}: {port}"


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
    examples = {"FRAUDSCORE_DATA_FILE", "FRAUDSCORE_MODEL_SHA256"}  # illustrations, no defaults
    for name, value in example_values():
        if name.startswith(ENV_PREFIX) and name not in examples:
            parsed = Settings.from_env({name: value}, dotenv=None)
            assert getattr(parsed, name.removeprefix(ENV_PREFIX).lower()) == default_of(name), name


def test_env_example_changes_nothing_until_edited(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text((ROOT / ".env.example").read_text())
    assert Settings.from_env({}, dotenv=dotenv) == Settings()
