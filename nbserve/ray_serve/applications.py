"""The names of nbserve's Serve applications, and a model's deployment as Ray tells it."""

from __future__ import annotations

#: The Serve application of the ingress, at route prefix ``/``.
INGRESS_APP = "nbserve"
#: Each model's Serve application is this prefix and the model's name.
MODEL_APP_PREFIX = "nbserve:"


def app_name(model_name: str) -> str:
    return MODEL_APP_PREFIX + model_name


def deployment_state(applications: dict, model_name: str) -> dict:
    """A model's deployment as ``serve.status()`` tells it: its status (HEALTHY, UPDATING,
    ...), its replicas by state, and Ray's message."""
    application = applications.get(app_name(model_name))
    if application is None:
        return {"status": "DELETED", "replicaStates": {}, "message": ""}
    deployment = application.deployments[model_name]
    return {"status": str(deployment.status.value),
            "replicaStates": {str(getattr(state, "value", state)): count
                              for state, count in deployment.replica_states.items()},
            "message": deployment.message}
