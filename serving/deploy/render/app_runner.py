"""An AWS App Runner `CreateService` request for a deployment, as
`aws apprunner create-service --cli-input-json file://FILE` takes it.

App Runner pulls only from Amazon ECR, so `--image` must name an ECR image (a private
one also needs `--access-role-arn`, a role App Runner may pull with). The auth key is a
Secrets Manager secret or SSM parameter passed by ARN (`--auth-secret`), never the key.
"""

from __future__ import annotations

import re
from typing import Any

from serving.deploy.render.spec import READINESS_PATH, Defaults, RenderError, ServiceSpec
from serving.settings import PREFIX

DEFAULTS = Defaults(cpu="1 vCPU", memory="2 GB", drain_delay=0.0, graceful_timeout=20.0, max_name=40)
_PRIVATE_ECR = re.compile(r"^\d{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/")
_PUBLIC_ECR = "public.ecr.aws/"


def create_service(spec: ServiceSpec) -> dict[str, Any]:
    if spec.image.startswith(_PUBLIC_ECR):
        repo_type = "ECR_PUBLIC"
    elif _PRIVATE_ECR.match(spec.image):
        repo_type = "ECR"
    else:
        raise RenderError(
            f"App Runner pulls only from Amazon ECR, not {spec.image!r}: push the image and pass "
            "--image ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPO:TAG"
        )
    if repo_type == "ECR" and not spec.access_role_arn:
        raise RenderError("a private ECR image needs --access-role-arn (a role App Runner may pull with)")
    if not spec.auto_scaling_arn and not spec.job_store:
        raise RenderError(
            "App Runner's default auto scaling runs up to 25 instances: pass --job-store redis://... "
            "or --auto-scaling-arn of a configuration with MaxSize 1"
        )
    image_config: dict[str, Any] = {"Port": str(spec.port), "RuntimeEnvironmentVariables": dict(spec.env)}
    if spec.auth_key:
        if not spec.auth_secret or not spec.auth_secret.startswith("arn:"):
            raise RenderError(
                "this deployment has an auth key: store it in Secrets Manager "
                "and pass the secret's ARN as --auth-secret"
            )
        image_config["RuntimeEnvironmentSecrets"] = {f"{PREFIX}AUTH_KEY": spec.auth_secret}
    source: dict[str, Any] = {
        "ImageRepository": {
            "ImageIdentifier": spec.image,
            "ImageRepositoryType": repo_type,
            "ImageConfiguration": image_config,
        },
        "AutoDeploymentsEnabled": False,
    }
    if spec.access_role_arn:
        source["AuthenticationConfiguration"] = {"AccessRoleArn": spec.access_role_arn}
    request: dict[str, Any] = {
        "ServiceName": spec.name,
        "SourceConfiguration": source,
        "InstanceConfiguration": {"Cpu": spec.cpu, "Memory": spec.memory},
        "HealthCheckConfiguration": {
            "Protocol": "HTTP",
            "Path": READINESS_PATH,
            "Interval": 5,
            "Timeout": 2,
            "HealthyThreshold": 1,
            "UnhealthyThreshold": 5,
        },
        "Tags": [
            {"Key": "managed-by", "Value": "serving"},
            {"Key": "serving-deployment-id", "Value": spec.deployment_id},
        ],
    }
    if spec.auto_scaling_arn:
        request["AutoScalingConfigurationArn"] = spec.auto_scaling_arn
    return request


def manifests(spec: ServiceSpec) -> dict[str, dict[str, Any]]:
    return {"create-service.json": create_service(spec)}
