"""A worker's two ways of running a handler, and what decides between them."""

from nbserve.archive import archive
from nbserve.engine import Engine

PIPELINED = '''\
import torch
from ts.torch_handler.base_handler import BaseHandler


class Doubler(BaseHandler):
    """Keeps BaseHandler's handle and preprocess: the worker pipelines it."""

    def initialize(self, context):
        self.model = lambda x: x * 2
        self.initialized = True

    def explain_handle(self, data_preprocess, raw_data):
        return [{"explained": data_preprocess.tolist()}]
'''

WHOLE_BATCH = '''\
import torch
from ts.torch_handler.base_handler import BaseHandler


class Padder(BaseHandler):
    """Preprocesses the batch as a whole: the worker runs handle on whole batches."""

    def initialize(self, context):
        self.model = lambda x: x * 2
        self.initialized = True

    def preprocess(self, data):
        return torch.as_tensor([row["body"] for row in data])
'''


def serve(engine, tmp_path, name, code):
    handler = tmp_path / f"{name}.py"
    handler.write_text(code)
    return engine.register(archive(name, "1.0", str(handler), export_path=tmp_path))


def test_a_handler_keeping_basehandlers_preprocess_is_pipelined_and_explain_finds_handle(tmp_path):
    with Engine() as engine:
        version = serve(engine, tmp_path, "doubler", PIPELINED)
        assert len(version.workers[0]._threads) == 2  # preprocessing, inference
        assert engine.predict("doubler", [1.0, 2.0]) == [2.0, 4.0]
        # TorchServe's header, as tornado spells it: the pipeline hands it to handle.
        assert engine.predict("doubler", [1.0], headers={"Explain": "True"}) == {"explained": [[1.0]]}


def test_a_whole_batch_preprocess_runs_as_handle(tmp_path):
    with Engine() as engine:
        version = serve(engine, tmp_path, "padder", WHOLE_BATCH)
        assert len(version.workers[0]._threads) == 1
        assert engine.predict("padder", [3.0]) == [6.0]
