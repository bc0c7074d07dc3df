from torchvision.models.densenet import DenseNet


class ImageClassifier(DenseNet):
    """densenet161, as TorchServe's example defines it for eager-mode archives."""

    def __init__(self):
        super().__init__(48, (6, 12, 36, 24), 96)
