"""``image_segmenter``: per pixel, the top class and its probability."""

import torch
from torchvision import transforms

from nbserve.handlers.base import timed
from nbserve.handlers.vision import VisionHandler


class ImageSegmenter(VisionHandler):
    """Answers an ``H x W x 2`` list per image: ``[class, probability]`` for every pixel."""

    image_processing = transforms.Compose([
        transforms.Resize(256),
        transforms.CenterCrop(224),
        transforms.ToTensor(),
        transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
    ])

    @timed
    def postprocess(self, data):
        best = torch.max(torch.nn.functional.softmax(data["out"], dim=1), dim=1)
        return torch.stack([best.indices.type(best.values.dtype), best.values], dim=3).tolist()
