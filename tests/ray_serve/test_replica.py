"""A replica's actor killed under a steady stream: every request still gets its answer."""

import time

import ray

from tests.support.helpers import Stream


def replica_actors(model: str) -> list[str]:
    return [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
            if a["name"].startswith(f"SERVE_REPLICA::nbserve:{model}#")]


def test_a_killed_replica_loses_no_request(on_ray, classifier_on_ray, ray_client, photos):
    before = replica_actors("resnet18")
    assert len(before) == 2
    with Stream(ray_client, "/predictions/resnet18", photos["cat.jpg"]) as stream:
        time.sleep(2)
        answered_before_kill = len(stream.statuses)
        ray.kill(ray.get_actor(before[0], namespace="serve"), no_restart=True)
        deadline = time.monotonic() + 90
        while True:  # until Ray has started a replica in the killed one's place
            now = replica_actors("resnet18")
            if len(now) == 2 and before[0] not in now \
                    and on_ray.state("resnet18")["replicaStates"] == {"RUNNING": 2}:
                break
            assert time.monotonic() < deadline, (now, on_ray.state("resnet18"))
            time.sleep(0.5)
    assert answered_before_kill > 0
    assert stream.failures == []
    assert len(stream.statuses) > answered_before_kill

