"""`serving deployment render`: Kubernetes manifests validated offline against the
Kubernetes schemas, a Cloud Run service and an App Runner CreateService request checked
against their documented fields, and the rendered environment run by a real daemon
whose probes, port, metrics and auth answer where the manifests say."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import msgspec
import pytest
import yaml
from botocore.session import get_session
from botocore.validate import ParamValidator
from deploy_helpers import SHOUT, Home, failure, ok
from starlette.routing import Route

from serving.cli import main
from serving.deploy.deployers.local import free_port
from serving.settings import Settings, load_settings

KUBE_VERSION = kubernetes_validate.latest_version()
AUTH_KEY = "render-test-key-8d1f"
ECR_IMAGE = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/shout:v1"
ROLE = "arn:aws:iam::123456789012:role/apprunner-ecr"
SECRET_ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:shout-auth"


@pytest.fixture(scope="module")
def shout(module_home: Home) -> Iterator[Home]:
    """A deployment `shout` with an auth key (a real local deploy), to render."""
    ok(module_home.cli("pipeline", "deploy", SHOUT, "--name", "shout", "--auth-key", AUTH_KEY))
    yield module_home


def render_dir(home: Home, tmp_path: Path, flavor: str, *args: str) -> dict[str, Any]:
    out = tmp_path / flavor
    ok(home.cli("deployment", "render", "shout", "--flavor", flavor, "-o", str(out), *args))
    docs: dict[str, Any] = {}
    for path in sorted(out.iterdir()):
        text = path.read_text()
        assert AUTH_KEY not in text or path.name == "secret.yaml", f"the auth key leaked into {path.name}"
        docs[path.name] = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    return docs


@pytest.fixture
def refused(shout: Home, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    """`render_refused(*args)`: the one error line of `serving deployment render shout ARGS`
    run in this process (the CLI's own code path, without a process start per case),
    which must exit 2 with nothing on stdout."""
    monkeypatch.setenv("SERVING_HOME", str(shout.path))

    def run(*args: str) -> str:
        code = main(["deployment", "render", "shout", *args])
        captured = capsys.readouterr()
        assert code == 2, captured
        assert captured.out == "", captured
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("serving: error: "), captured.err
        return lines[0]

    return run


def daemon_routes() -> set[str]:
    """The paths the daemon's real Starlette app serves (built the way it starts)."""
    from runtimes.memory import MemoryOnlyRuntime
    from serving.app import create_app
    from serving.loader import load_pipeline

    app = create_app(load_pipeline(SHOUT), MemoryOnlyRuntime(), load_settings({}))
    return {r.path for r in app.starlette.routes if isinstance(r, Route)}


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def setting_fields() -> set[str]:
    return {f"SERVING_{f.name.upper()}" for f in msgspec.structs.fields(Settings)}


# -- Kubernetes ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        (),
        (
            "--replicas",
            "2",
            "--max-replicas",
            "5",
            "--job-store",
            "redis://redis:6379/0",
            "--namespace",
            "apps",
        ),
    ],
    ids=["one-replica", "scaled"],
)
def test_kubernetes_manifests_validate_against_the_schemas(
    shout: Home, tmp_path: Path, args: tuple[str, ...]
) -> None:
    docs = render_dir(shout, tmp_path, "kubernetes", *args)
    kinds = {doc["kind"]: doc for doc in docs.values()}
    assert set(kinds) == {"Secret", "Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"}
    for name, doc in docs.items():
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name} is not a valid {doc['kind']} for Kubernetes {KUBE_VERSION}: {exc}")
    dep = kinds["Deployment"]
    env = env_of(dep["spec"]["template"]["spec"]["containers"][0])
    if args:
        assert dep["spec"]["replicas"] == 2 and env["SERVING_JOB_STORE"] == "redis://redis:6379/0"
        assert kinds["HorizontalPodAutoscaler"]["spec"]["minReplicas"] == 2
        assert kinds["HorizontalPodAutoscaler"]["spec"]["maxReplicas"] == 5
        assert {d["metadata"]["namespace"] for d in docs.values()} == {"apps"}
    else:
        assert dep["spec"]["replicas"] == 1 and "SERVING_JOB_STORE" not in env


def test_kubernetes_manifests_agree_with_the_daemon(shout: Home, tmp_path: Path) -> None:
    docs = render_dir(shout, tmp_path, "kubernetes", "--drain-delay", "3", "--graceful-timeout", "20")
    pod = docs["deployment.yaml"]["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    env = env_of(container)
    routes = daemon_routes()

    # Probes name real routes on the container's named port, which SERVING_PORT serves.
    (port,) = container["ports"]
    assert env["SERVING_PORT"] == str(port["containerPort"])
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = container[kind]["httpGet"]
        assert probe["port"] == port["name"] and probe["path"] in routes
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert docs["service.yaml"]["spec"]["ports"][0]["targetPort"] == port["name"]
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] in routes
    assert annotations["prometheus.io/port"] == str(port["containerPort"])

    # Every variable is a daemon setting, and the daemon accepts the values.
    assert set(env) <= setting_fields()
    settings = load_settings({k: v for k, v in env.items() if isinstance(v, str)})
    assert settings.host == "0.0.0.0" and settings.drain_delay == 3 and settings.graceful_timeout == 20

    # Shutdown: preStop waits one drain delay; the grace period covers it, the daemon's
    # own drain delay and its graceful timeout.
    assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "3"]
    assert pod["spec"]["terminationGracePeriodSeconds"] >= 3 + 3 + 20

    # The key is in the Secret only; the container reads it from there.
    ref = env["SERVING_AUTH_KEY"]["secretKeyRef"]
    secret = docs["secret.yaml"]
    assert ref["name"] == secret["metadata"]["name"] and secret["stringData"][ref["key"]] == AUTH_KEY
    assert AUTH_KEY not in yaml.safe_dump(docs["deployment.yaml"])


def test_a_daemon_with_the_rendered_environment_answers_where_the_manifests_say(
    shout: Home, tmp_path: Path, daemon: Any
) -> None:
    port = free_port()
    docs = render_dir(shout, tmp_path, "kubernetes", "--port", str(port))
    (container,) = docs["deployment.yaml"]["spec"]["template"]["spec"]["containers"]
    secret = docs["secret.yaml"]["stringData"]
    env: dict[str, str] = {}
    for item in container["env"]:
        if "valueFrom" in item:
            env[item["name"]] = secret[item["valueFrom"]["secretKeyRef"]["key"]]
        else:
            env[item["name"]] = item["value"]
    env["SERVING_HOME"] = str(tmp_path / "container-home")  # the image's emptyDir
    # What the image provides: the pipeline (the docker flavor bakes SERVING_PIPELINE in).
    served = daemon(SHOUT, **env)
    base = f"http://127.0.0.1:{container['ports'][0]['containerPort']}"
    with httpx.Client(base_url=base, timeout=10.0) as client:
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            path = container[kind]["httpGet"]["path"]
            assert client.get(path).status_code == 200, f"{kind} {path}"
        pod_annotations = docs["deployment.yaml"]["spec"]["template"]["metadata"]["annotations"]
        metrics = client.get(pod_annotations["prometheus.io/path"])
        assert metrics.status_code == 200 and "serving_" in metrics.text
        assert client.post("/invoke", json={"parameters": {"word": "hi"}}).status_code == 401
        reply = client.post(
            "/invoke", json={"parameters": {"word": "hi"}}, headers={"Authorization": f"Bearer {AUTH_KEY}"}
        )
        assert reply.status_code == 200 and reply.json()["outputs"] == {"loud": "HI!"}
        status = client.get("/status", headers={"Authorization": f"Bearer {AUTH_KEY}"}).json()
    effective = status["settings"]
    assert effective["port"] == port and effective["drain_delay"] == 5 and effective["graceful_timeout"] == 30
    assert effective["deployment_name"] == "shout" and effective["auth_key"] == "***"
    served.stop()


def test_more_than_one_replica_needs_a_job_store(shout: Home, refused: Any) -> None:
    error = failure(
        shout.cli("deployment", "render", "shout", "--flavor", "kubernetes", "--replicas", "2"), 2
    )
    assert "--job-store" in error
    assert "--job-store" in refused("--flavor", "kubernetes", "--max-replicas", "3")


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (("--env", "SERVING_MAX_QUEU=5"), "SERVING_MAX_QUEU"),
        (("--env", "SERVING_MAX_QUEUE=lots"), "SERVING_MAX_QUEUE"),
        (("--env", "SERVING_PORT=1"), "--port"),
        (("--env", "novalue"), "KEY=VALUE"),
        (("--job-store", "http://nope"), "SERVING_JOB_STORE"),
        (("--replicas", "3", "--max-replicas", "2", "--job-store", "redis://r:6379/0"), "--max-replicas"),
    ],
)
def test_bad_options_are_one_usage_line(refused: Any, args: tuple[str, ...], names: str) -> None:
    assert names in refused("--flavor", "kubernetes", *args)


def test_render_prints_one_stream_without_output_folder(shout: Home) -> None:
    result = shout.cli("deployment", "render", "shout", "--flavor", "kubernetes")
    docs = list(yaml.safe_load_all(ok(result)))
    assert [d["kind"] for d in docs] == [
        "Secret",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
    ]
    assert "kubectl apply -f -" in result.stderr


def test_an_unknown_deployment_or_flavor(shout: Home) -> None:
    assert "no deployment named" in failure(
        shout.cli("deployment", "render", "nope", "--flavor", "kubernetes"), 1
    )
    result = shout.cli("deployment", "render", "shout", "--flavor", "heroku")
    assert result.returncode == 2 and "kubernetes" in result.stderr and "gcp-cloud-run" in result.stderr


# -- Cloud Run -----------------------------------------------------------------------------

# The fields of a Cloud Run service YAML (cloud.google.com/run/docs/reference/yaml/v1).
CLOUD_RUN_TEMPLATE_SPEC = {
    "containerConcurrency",
    "timeoutSeconds",
    "serviceAccountName",
    "containers",
    "volumes",
}
CLOUD_RUN_CONTAINER = {
    "name",
    "image",
    "command",
    "args",
    "env",
    "resources",
    "ports",
    "volumeMounts",
    "startupProbe",
    "livenessProbe",
    "workingDir",
}


def test_cloud_run_service(shout: Home, tmp_path: Path) -> None:
    docs = render_dir(
        shout, tmp_path, "gcp-cloud-run", "--max-concurrency", "17", "--image", "gcr.io/p/shout:1"
    )
    svc = docs["service.yaml"]
    assert svc["apiVersion"] == "serving.knative.dev/v1" and svc["kind"] == "Service"
    assert svc["metadata"]["name"] == "shout"
    template = svc["spec"]["template"]
    assert set(template["spec"]) <= CLOUD_RUN_TEMPLATE_SPEC
    assert template["spec"]["containerConcurrency"] == 17
    assert 1 <= template["spec"]["timeoutSeconds"] <= 3600
    annotations = template["metadata"]["annotations"]
    assert annotations["autoscaling.knative.dev/minScale"] == "1"
    assert annotations["autoscaling.knative.dev/maxScale"] == "1"  # no job store: one instance
    (container,) = template["spec"]["containers"]
    assert set(container) <= CLOUD_RUN_CONTAINER
    assert container["image"] == "gcr.io/p/shout:1"
    env = env_of(container)
    assert env["SERVING_MAX_CONCURRENCY"] == "17"
    (port,) = container["ports"]
    assert port["name"] in ("http1", "h2c") and env["SERVING_PORT"] == str(port["containerPort"])
    assert "PORT" not in env  # Cloud Run sets it
    routes = daemon_routes()
    assert container["startupProbe"]["httpGet"]["path"] in routes
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert env["SERVING_AUTH_KEY"] == {"secretKeyRef": {"name": "shout-auth-key", "key": "latest"}}
    settings = load_settings({k: v for k, v in env.items() if isinstance(v, str)})
    assert settings.drain_delay + settings.graceful_timeout < 10  # Cloud Run kills 10 s after SIGTERM
    # The container is a Kubernetes container: its fields have the core/v1 types.
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": {"containers": [container]}}
    kubernetes_validate.validate(pod, KUBE_VERSION, strict=True)


def test_cloud_run_refuses_what_it_cannot_do(refused: Any) -> None:
    assert "1000" in refused("--flavor", "gcp-cloud-run", "--max-concurrency", "5000")
    assert "10 s" in refused("--flavor", "gcp-cloud-run", "--graceful-timeout", "30")


# -- App Runner ----------------------------------------------------------------------------


def create_service_shape() -> Any:
    """AWS's own model of the CreateService request, as botocore ships it (offline)."""
    return get_session().get_service_model("apprunner").operation_model("CreateService").input_shape


def test_app_runner_create_service(shout: Home, tmp_path: Path) -> None:
    args = ("--image", ECR_IMAGE, "--access-role-arn", ROLE, "--auth-secret", SECRET_ARN)
    docs = render_dir(shout, tmp_path, "aws-app-runner", *args, "--job-store", "redis://redis:6379/0")
    request = docs["create-service.json"]
    report = ParamValidator().validate(request, create_service_shape())
    assert not report.has_errors(), report.generate_report()
    image = request["SourceConfiguration"]["ImageRepository"]
    assert image["ImageIdentifier"] == ECR_IMAGE and image["ImageRepositoryType"] == "ECR"
    config = image["ImageConfiguration"]
    assert config["Port"] == config["RuntimeEnvironmentVariables"]["SERVING_PORT"]
    assert set(config["RuntimeEnvironmentVariables"]) <= setting_fields()
    assert config["RuntimeEnvironmentSecrets"] == {"SERVING_AUTH_KEY": SECRET_ARN}
    assert request["SourceConfiguration"]["AuthenticationConfiguration"] == {"AccessRoleArn": ROLE}
    health = request["HealthCheckConfiguration"]
    assert health["Protocol"] == "HTTP" and health["Path"] == "/readyz" and health["Path"] in daemon_routes()
    load_settings(config["RuntimeEnvironmentVariables"])


def test_app_runner_public_ecr_with_a_scaling_configuration(shout: Home, tmp_path: Path) -> None:
    scaling = "arn:aws:apprunner:eu-west-1:123456789012:autoscalingconfiguration/one/1/abc"
    args = (
        "--image",
        "public.ecr.aws/acme/shout:1",
        "--auth-secret",
        SECRET_ARN,
        "--auto-scaling-arn",
        scaling,
    )
    request = render_dir(shout, tmp_path, "aws-app-runner", *args)["create-service.json"]
    assert not ParamValidator().validate(request, create_service_shape()).has_errors()
    assert request["SourceConfiguration"]["ImageRepository"]["ImageRepositoryType"] == "ECR_PUBLIC"
    assert request["AutoScalingConfigurationArn"] == scaling


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--auth-secret", SECRET_ARN, "--job-store", "redis://r:6379/0"), "--image"),
        (
            ("--image", ECR_IMAGE, "--auth-secret", SECRET_ARN, "--job-store", "redis://r:6379/0"),
            "--access-role-arn",
        ),
        (
            ("--image", ECR_IMAGE, "--access-role-arn", ROLE, "--job-store", "redis://r:6379/0"),
            "--auth-secret",
        ),
        (("--image", ECR_IMAGE, "--access-role-arn", ROLE, "--auth-secret", SECRET_ARN), "--job-store"),
    ],
    ids=["not-ecr", "no-role", "no-secret-arn", "default-autoscaling"],
)
def test_app_runner_needs(refused: Any, args: tuple[str, ...], says: str) -> None:
    assert says in refused("--flavor", "aws-app-runner", *args)


def test_grace_period_rounds_up(shout: Home, tmp_path: Path) -> None:
    docs = render_dir(shout, tmp_path, "kubernetes", "--drain-delay", "0.4", "--graceful-timeout", "1.3")
    grace = docs["deployment.yaml"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= math.ceil(0.4 + 0.4 + 1.3)
