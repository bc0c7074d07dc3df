import re

from torchvision.models.densenet import DenseNet


class ImageClassifier(DenseNet):
    """densenet161, as TorchServe's example defines it for eager-mode archives."""

    def __init__(self):
        super().__init__(48, (6, 12, 36, 24), 96)

    def load_state_dict(self, state_dict, strict=True):
        # The published densenet161-8d451a50.pth names layers 'norm.1', 'conv.2', ...: names
        # with dots that modules may no longer have. Rename them as torchvision does.
        pattern = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\."
                             r"((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$")
        for key in list(state_dict):
            match = pattern.match(key)
            if match:
                state_dict[match.group(1) + match.group(2)] = state_dict.pop(key)
        return super().load_state_dict(state_dict, strict)
