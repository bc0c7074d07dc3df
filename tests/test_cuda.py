"""Workers on a CUDA GPU: the same answers as on the CPU, pinned batches on a stream per worker,
out-of-memory batches split, GPU memory in the status, and the opt-in GPU decoding and autocast.

These run only where a CUDA GPU is present (``bench/gpu.py --tests`` runs them on a GPU
machine); elsewhere each is skipped, saying so.
"""

import dataclasses
import json
import shutil

import pytest
import torch

from nbserve.notebook.display import device_text
from nbserve.serving.engine import Engine
from nbserve.serving.loops import _join
from nbserve.serving.model_config import machine_defaults
from nbserve.store.archiver import archive

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA GPU here: these tests were not run")

OOM_HANDLER = '''\
import torch
from nbserve.handlers.base import BaseHandler

FRACTION = {fraction}


class Hungry(BaseHandler):
    """Each request takes FRACTION of the GPU's memory; a body of 5 takes 5 times that."""

    def initialize(self, context):
        self.device = torch.device("cuda", context.system_properties["gpu_id"])
        self.model = lambda x: x
        self.initialized = True

    def inference(self, data, *args, **kwargs):
        total = torch.cuda.get_device_properties(self.device).total_memory
        need = int(float(data.sum()) * FRACTION * total)
        block = torch.empty(need, dtype=torch.uint8, device=self.device)
        del block
        return data
'''


def top5(answer: dict) -> list[str]:
    return list(answer)


def test_a_model_on_the_gpu_answers_as_on_the_cpu(classifier_mar, photos):
    cpu = Engine(machine_defaults(number_of_gpu=0))
    gpu = Engine()
    try:
        on_cpu = cpu.register(classifier_mar)
        on_gpu = gpu.register(classifier_mar)
        assert device_text(on_cpu) == "cpu" and device_text(on_gpu).startswith("cuda:0 (")
        assert on_gpu.workers[0].gpu_memory > 0
        for image in photos.values():
            expected, answer = cpu.predict("resnet18", image), gpu.predict("resnet18", image)
            assert top5(answer) == top5(expected)
            assert all(abs(answer[k] - expected[k]) < 1e-3 for k in expected)
    finally:
        cpu.close()
        gpu.close()


def test_batches_are_pinned_and_copied_on_each_workers_own_stream(classifier_mar):
    parts = [torch.randn(1, 3, 8, 8) for _ in range(3)]
    batch = _join(parts, torch.device("cuda", 0))
    assert batch.is_cuda and torch.equal(batch.cpu(), torch.cat(parts))
    with Engine() as engine:
        version = engine.register(classifier_mar, initial_workers=2)
        streams = [w._stream for w in version.workers]
        assert all(isinstance(s, torch.cuda.Stream) for s in streams)
        assert streams[0] != streams[1]
        assert torch.backends.cudnn.benchmark  # fixed 224x224 inputs


def test_an_out_of_memory_batch_is_split_and_only_what_does_not_fit_fails(tmp_path):
    handler = tmp_path / "hungry.py"
    handler.write_text(OOM_HANDLER.format(fraction=0.3))
    with Engine() as engine:
        version = engine.register(archive("hungry", "1.0", str(handler), export_path=tmp_path),
                                  batch_size=4, max_batch_delay=200)
        futures = [engine.submit("hungry", {"body": value}) for value in (1, 1, 5, 1)]
        statuses = [f.exception(120).status if f.exception(120) else 200 for f in futures]
        assert statuses == [200, 200, 507, 200]
        assert 4 in version.stats.batch_sizes  # they did arrive as one batch
        assert engine.predict("hungry", 1) == 1  # and the worker goes on


def test_process_workers_run_on_the_gpu(classifier_mar, photos):
    with Engine() as engine:
        version = engine.register(classifier_mar, isolation="process")
        assert version.workers[0].gpu_memory > 0
        image = next(iter(photos.values()))
        assert len(engine.predict("resnet18", image)) == 5


@pytest.mark.parametrize("setting", [{"decode_on_device": True}, {"autocast": "float16"},
                                     {"autocast": "bfloat16"}])
def test_opt_in_gpu_decoding_and_autocast_keep_the_top_class(classifier_mar, photos, tmp_path,
                                                              setting):
    folder = tmp_path / "unpacked"
    shutil.unpack_archive(classifier_mar, folder, "zip")
    (folder / "model-config.yaml").write_text(json.dumps({"handler": setting}))
    manifest = json.loads((folder / "MAR-INF" / "MANIFEST.json").read_text())
    manifest["model"]["configFile"] = "model-config.yaml"
    (folder / "MAR-INF" / "MANIFEST.json").write_text(json.dumps(manifest))
    with Engine() as plain, Engine() as opted:
        plain.register(classifier_mar)
        version = opted.register(folder)
        assert dataclasses.asdict(version.config)["yaml"]["handler"] == setting
        for image in photos.values():
            expected, answer = plain.predict("resnet18", image), opted.predict("resnet18", image)
            assert top5(answer)[0] == top5(expected)[0]
