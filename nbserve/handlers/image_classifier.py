"""``image_classifier``: ImageNet-style preprocessing, softmax, the top 5 classes with labels."""

import torch
import torch.nn.functional as F
from torchvision import transforms

from nbserve.handlers.base import timed
from nbserve.handlers.util import map_class_to_label
from nbserve.handlers.vision import VisionHandler


class ImageClassifier(VisionHandler):
    """Answers ``{"tabby": 0.45, "tiger_cat": 0.26, ...}`` per image, as TorchServe's does."""

    topk = 5
    fixed_size_inputs = True
    image_processing = transforms.Compose([
        transforms.Resize(256),
        transforms.CenterCrop(224),
        transforms.ToTensor(),
        transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
    ])
    tensor_processing = transforms.Compose([
        transforms.Resize(256, antialias=True),
        transforms.CenterCrop(224),
        transforms.ConvertImageDtype(torch.float),
        transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
    ])

    def set_max_result_classes(self, topk):
        self.topk = topk

    def get_max_result_classes(self):
        return self.topk

    @timed
    def postprocess(self, data):
        probs, classes = torch.topk(F.softmax(data, dim=1), min(self.topk, data.shape[1]), dim=1)
        return map_class_to_label(probs.tolist(), self.mapping, classes.tolist())
