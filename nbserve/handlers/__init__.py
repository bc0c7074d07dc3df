"""Handlers: TorchServe's handler contract and its default handlers.

This module stays light (no torch import) so that archiving and the command line start fast.
"""

#: The default handlers nbserve runs, by the names TorchServe gives them.
DEFAULT_HANDLERS = (
    "base_handler",
    "image_classifier",
    "image_segmenter",
    "object_detector",
    "text_classifier",
    "text_generation",
)

#: Every name torch-model-archiver 0.12 accepts for ``--handler``: an archive made for TorchServe
#: may name one nbserve does not run.
TORCHSERVE_HANDLERS = DEFAULT_HANDLERS + (
    "dali_image_classifier",
    "vllm_handler",  # served by text_generation, with transformers
    "trt_llm_handler",
)
