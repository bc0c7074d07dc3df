"""LitServe serving the benchmark's image classifier with the same work as TorchServe's and
nbserve's ``image_classifier`` handler: the same weights, PIL decode, resize 256, crop 224,
normalise, forward, softmax top 5 named from index_to_name.json.

LitServe takes JSON or form bodies (``decode_request`` gets ``await request.form()``), so it
is measured with the multipart body ``curl -F data=@cat.jpg`` sends; a raw JPEG body it
cannot read.

    python bench/litserve_server.py mobilenet_v3_small PORT [--max-batch-size 8
        --batch-timeout 0.005]

(``pip install litserve``; bench/rest.py starts it.)
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import litserve
import torch
import torchvision
from PIL import Image
from torchvision import transforms

sys.path.insert(0, str(Path(__file__).parent))
import models  # noqa: E402

PREPROCESS = transforms.Compose([
    transforms.Resize(256),
    transforms.CenterCrop(224),
    transforms.ToTensor(),
    transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
])


class ImageClassifierAPI(litserve.LitAPI):
    def __init__(self, name: str, **options):
        super().__init__(**options)
        self.name = name

    def setup(self, device):
        torch.set_num_threads(1)  # as TorchServe's and nbserve's CPU workers default to
        models.build(self.name)
        self.model = getattr(torchvision.models, self.name)(weights=None)
        self.model.load_state_dict(torch.load(models.CACHE / self.name / f"{self.name}.pth"))
        self.model.eval()
        self.labels = json.loads(models.LABELS.read_text())

    def decode_request(self, request):
        upload = request["data"]
        body = upload.file.read() if hasattr(upload, "file") else upload.encode()
        return PREPROCESS(Image.open(io.BytesIO(body)).convert("RGB"))

    def batch(self, inputs):
        return torch.stack(inputs)

    def predict(self, x):
        with torch.inference_mode():
            scores = torch.softmax(self.model(x if x.dim() == 4 else x[None]), dim=1)
        top = torch.topk(scores, 5)
        return [{self.labels[str(i)][1]: p for i, p in zip(ids, ps)}
                for ids, ps in zip(top.indices.tolist(), top.values.tolist())]

    def unbatch(self, output):
        return output

    def encode_response(self, output):
        return output[0] if isinstance(output, list) and len(output) == 1 else output


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("port", type=int)
    parser.add_argument("--max-batch-size", type=int, default=1)
    parser.add_argument("--batch-timeout", type=float, default=0.0)
    args = parser.parse_args()
    api = ImageClassifierAPI(args.model, max_batch_size=args.max_batch_size,
                             batch_timeout=args.batch_timeout)
    server = litserve.LitServer(api, accelerator="cpu", timeout=300)
    server.run(host="127.0.0.1", port=args.port, generate_client_file=False)


if __name__ == "__main__":
    main()
