"""The team stack's accounts on its MLflow server, as a team would want them: every member may log
runs to any experiment and read every model; one maintainer account also registers versions of the
project's model and moves its aliases (`champion` decides what predict.py and serve.py run for
everyone). The server's admin account manages users and is used by the stack alone.

Set through the basic-auth app's REST API: a role per kind of account, its grants on every
experiment or registered model ("*"), and the project's registered model created up front by the
maintainer. A member who made the model first would own it (MLflow gives its creator MANAGE)."""

from __future__ import annotations

from collections.abc import Mapping

import requests

from common.errors import PipelineError
from tracking import registry

MAINTAINER, MEMBER = "maintainer", "member"
WORKSPACE = "default"  # the one MLflow uses when workspaces are off
ROLES = {
    MAINTAINER: (("experiment", "EDIT"), ("registered_model", "MANAGE")),
    MEMBER: (("experiment", "EDIT"), ("registered_model", "READ")),
}
# The server's default for a resource no role speaks of. It is also the floor under every role's
# grant, so anything above READ would lift a member's READ on the model to it.
DEFAULT_PERMISSION = "READ"
TIMEOUT_S = 30.0


def create(
    url: str, admin: tuple[str, str], passwords: Mapping[str, str], registered_model: str
) -> None:
    """Create each account (name -> password) with its role, then the registered model, made by
    the maintainer and tagged with its name so a member's refused registration can say whom to
    ask."""
    for name, password in passwords.items():
        call(url, "2.0/mlflow/users/create", admin, username=name, password=password)
        role = call(url, "3.0/mlflow/roles/create", admin, workspace=WORKSPACE, name=name)
        role_id = role["role"]["id"]
        for resource, permission in ROLES[name]:
            grant = {"resource_type": resource, "resource_pattern": "*", "permission": permission}
            call(url, "3.0/mlflow/roles/permissions/add", admin, role_id=role_id, **grant)
        call(url, "3.0/mlflow/roles/assign", admin, username=name, role_id=role_id)
    maintainer = (MAINTAINER, passwords[MAINTAINER])
    tag = {"key": registry.MAINTAINER_TAG, "value": MAINTAINER}
    description = f"Versions are registered and aliases moved by {MAINTAINER} (team_stack.py)."
    call(
        url,
        "2.0/mlflow/registered-models/create",
        maintainer,
        name=registered_model,
        tags=[tag],
        description=description,
    )


def call(url: str, endpoint: str, account: tuple[str, str], **body: object) -> dict:
    """POST to the server's API as `account`; a refusal names the endpoint, never the body (it
    holds passwords)."""
    try:
        answer = requests.post(f"{url}/api/{endpoint}", json=body, auth=account, timeout=TIMEOUT_S)
    except requests.RequestException as err:
        raise PipelineError(f"the MLflow server at {url} stopped answering: see its log") from err
    if not answer.ok:
        raise PipelineError(
            f"the MLflow server refused {endpoint} (HTTP {answer.status_code}) while setting up "
            f"the team's accounts: see its log"
        )
    return answer.json()
