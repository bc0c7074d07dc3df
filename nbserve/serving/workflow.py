"""TorchServe's workflows: a DAG of models and functions, each node served as the model
``{workflow}__{node}``, run for each request as TorchServe's DagExecutor runs it.

The start node gets the request's inputs; a node with one parent gets that parent's answer as
``body``, a node with several gets one input per parent, named after it. With one leaf, its
answer is the workflow's; with several, ``{leaf: answer}``. A node is tried again
``retry-attempts`` times when it fails or passes ``timeout-ms``; then the request fails with
TorchServe's 500 "Error executing <node>". Unlike TorchServe 0.12, every node whose parents are
done runs at once and each answer is taken as it comes (TorchServe takes one per round, and can
wait ``timeout-ms`` on a node that already answered).
"""

from __future__ import annotations

import json
from concurrent.futures import FIRST_COMPLETED, Future, InvalidStateError, ThreadPoolExecutor, wait
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Callable

from nbserve.errors import ClientClosedRequest, InferenceError, NBServeError
from nbserve.serving.answers import encode_answer
from nbserve.serving.engine import Engine
from nbserve.store.live import live_model
from nbserve.store.workflow_archive import WorkflowArchive, WorkflowNode


class WorkflowFailed(NBServeError):
    status = 500
    type = "InternalServerException"


class Workflow:
    """A registered workflow: its archive, and the engine serving its nodes."""

    def __init__(self, archive: WorkflowArchive, engine: Engine):
        self.archive, self.engine = archive, engine
        self.name = archive.name
        self._pool = ThreadPoolExecutor(4, thread_name_prefix=f"nbserve-wf-{self.name}")

    def register(self, resolve: Callable[[str], Path]) -> None:
        """Serve every node (archives found by ``resolve``); if one cannot be served, those
        that were are removed again, and WorkflowFailed names each failure."""
        served, failures = [], []
        for node in self.archive.nodes.values():
            try:
                self._serve(node, resolve)
                served.append(node.model_name)
            except Exception as error:  # noqa: BLE001 - collected, answered together
                failures.append(f"Workflow Node {node.model_name} failed to register. "
                                f"Details: {error}")
        if failures:
            for model_name in served:
                self.engine.unregister(model_name, wait=False)
            raise WorkflowFailed(f"Workflow {self.name} has failed to register. "
                                 f"Failures: {failures}")

    def _serve(self, node: WorkflowNode, resolve: Callable[[str], Path]) -> None:
        settings = node.settings
        source = (self.archive.model_source(node, resolve) if node.url
                  else live_model(self.archive.function(node.name), node.model_name))
        self.engine.register(source, model_name=node.model_name,
                             batch_size=settings["batch-size"],
                             max_batch_delay=settings["max-batch-delay"],
                             initial_workers=settings["min-workers"],
                             max_workers=max(settings["max-workers"], settings["min-workers"]))

    def unregister(self) -> None:
        for node in self.archive.nodes.values():
            try:
                self.engine.unregister(node.model_name, wait=False)
            except NBServeError:
                pass  # already gone
        self._pool.shutdown(wait=False)

    # A request through the DAG.

    def predict(self, inputs: dict, headers: dict) -> Future:
        """The workflow's answer to one request: a future of ``(body bytes, content type)``."""
        return self._pool.submit(self._run, inputs, headers)

    def _run(self, inputs: dict, headers: dict) -> tuple[bytes, str]:
        dag, archive = self.archive.dag, self.archive
        waiting = {node: len(archive.parents(node)) for node in dag}
        node_inputs: dict[str, dict] = {archive.start: dict(inputs)}
        answers: dict[str, bytes] = {}
        running: dict[Future, str] = {}
        with ThreadPoolExecutor(max(1, len(dag)), thread_name_prefix="nbserve-wf-node") as pool:
            ready = [archive.start]
            while ready or running:
                for node in ready:
                    running[pool.submit(self._invoke, archive.nodes[node], node_inputs[node],
                                        headers)] = node
                ready = []
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    node = running.pop(future)
                    answers[node] = future.result()  # WorkflowFailed ends the request
                    for child in dag[node]:
                        single = len(archive.parents(child)) == 1
                        node_inputs.setdefault(child, {})["body" if single else node] = \
                            answers[node]
                        waiting[child] -= 1
                        if waiting[child] == 0:
                            ready.append(child)
        leaves = [node for node in dag if not dag[node]]
        if len(leaves) == 1:
            return answers[leaves[0]], "application/json"
        return json.dumps({leaf: json.loads(answers[leaf]) for leaf in leaves}).encode(), \
            "application/json"

    def _invoke(self, node: WorkflowNode, inputs: dict, headers: dict) -> bytes:
        """A node's answer as the bytes its model would send, tried again as the spec says."""
        attempts = node.settings["retry-attempts"] + 1
        for _ in range(attempts):
            future = self.engine.submit(node.model_name, inputs, headers=headers)
            try:
                value = future.result(timeout=node.settings["timeout-ms"] / 1000).value
                return encode_answer(value)[0]
            except FutureTimeout:
                _give_up(future)
            except (InferenceError, NBServeError):
                pass
        raise WorkflowFailed(f"Error executing {node.name}")


def _give_up(future: Future) -> None:
    """Drop a node's request that timed out: unrun if it still waits, its answer unread."""
    try:
        future.set_exception(ClientClosedRequest("the workflow's timeout-ms passed"))
    except InvalidStateError:  # answered meanwhile
        pass
