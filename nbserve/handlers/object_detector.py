"""``object_detector``: boxes scoring at least ``threshold``, each with its label and score."""

import torch
from torchvision import transforms

from nbserve.handlers.base import per_request, timed
from nbserve.handlers.util import map_class_to_label
from nbserve.handlers.vision import VisionHandler


class ObjectDetector(VisionHandler):
    """Answers ``[{"person": [x1, y1, x2, y2], "score": 0.98}, ...]`` per image."""

    image_processing = transforms.Compose([transforms.ToTensor()])
    threshold = 0.5

    @per_request
    @timed
    def preprocess(self, data):
        # Detection models take images of any size: a list, not a stacked batch.
        return self.to_device([self.preprocess_one(row) for row in data])

    @timed
    def inference(self, data, *args, **kwargs):
        with torch.inference_mode(), self.autocast():
            return self.model(data, *args, **kwargs)

    @timed
    def postprocess(self, data):
        result = []
        for row in data:
            keep = row["scores"] >= self.threshold
            boxes, labels, scores = (row[k][keep].tolist() for k in ("boxes", "labels", "scores"))
            detections = []
            for label, box, score in zip(labels, boxes, scores):
                detection = map_class_to_label([[box]], self.mapping, [[label]])[0]
                detection["score"] = score
                detections.append(detection)
            result.append(detections)
        return result
