"""``VisionHandler``: images in, as TorchServe's vision handlers read them, but never refused for
their mode by nbserve's own transforms.

TorchServe feeds a grayscale, RGBA or palette image straight to a 3-channel normalisation and
answers 503 "Prediction failed". Here an image bound for nbserve's own ``image_processing`` (the
default handlers', and subclasses that keep it) is converted to RGB first. A handler with
transforms of its own gets the image as decoded, as TorchServe gives it: an MNIST handler's
one-channel transforms get the digit's one channel. An input that is not an image at all is
answered 400 with the reason, for that request alone.
"""

from __future__ import annotations

import base64
import io
import warnings

import torch
from PIL import Image, UnidentifiedImageError
from torchvision.io import ImageReadMode, decode_jpeg

from nbserve.handlers.base import BaseHandler, per_request, timed
from nbserve.handlers.util import IMAGE_FORMATS, PredictionException, request_body


def decode_image(value, rgb: bool = True) -> Image.Image:
    """A request's image (bytes, base64 text, or a PIL image), as RGB if ``rgb``.

    Raises PredictionException(400) for anything that is not a readable image; Pillow's
    decompression-bomb limit stays on unless the worker was started with it off.
    """
    if isinstance(value, Image.Image):
        image = value
    else:
        if isinstance(value, str):
            try:
                value = base64.b64decode(value)
            except ValueError:
                raise PredictionException("Input is text, not an image or its base64.", 400) from None
        if not value:
            raise PredictionException("Input is empty: send an image as the request body.", 400)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image = Image.open(io.BytesIO(value), formats=IMAGE_FORMATS)
                image.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise PredictionException(f"Image refused: {e}", 400) from None
        except UnidentifiedImageError:
            raise PredictionException(
                f"Input is not an image in a format served here ({', '.join(IMAGE_FORMATS)}); "
                "convert it to one of them.", 400) from None
        except (OSError, SyntaxError, ValueError) as e:
            raise PredictionException(f"Image could not be decoded: {e}", 400) from None
    if rgb and image.mode != "RGB":
        if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
            background = Image.new("RGB", image.size, (255, 255, 255))
            background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
            image = background
        else:
            image = image.convert("RGB")
    return image


class VisionHandler(BaseHandler):
    """Base of the image handlers: decode each request's image, ``image_processing`` it, stack."""

    image_processing = None
    #: ``image_processing`` for a decoded uint8 CHW tensor on the model's device, used where
    #: model-config.yaml's ``handler: {decode_on_device: true}`` asks (see preprocess_one).
    tensor_processing = None
    #: Whether every input comes out of ``image_processing`` the same size (a center crop),
    #: so that on a GPU cuDNN may choose its kernels once for that shape.
    fixed_size_inputs = False

    def initialize(self, context):
        super().initialize(context)
        if not context.system_properties.get("limit_max_image_pixels", True):
            Image.MAX_IMAGE_PIXELS = None

    @per_request
    @timed
    def preprocess(self, data):
        return self.to_device(torch.stack([self.preprocess_one(row) for row in data]))

    def preprocess_one(self, row) -> torch.Tensor:
        """One request's image as the model's input tensor.

        With ``handler: {decode_on_device: true}`` in model-config.yaml (beyond TorchServe), a
        JPEG is decoded by torchvision on the model's device (nvJPEG on a GPU) and resized
        there by ``tensor_processing``; the answers differ slightly from PIL's decoding and
        resizing, which stay the default because they give TorchServe's answers.
        """
        value = request_body(row)
        if isinstance(value, (list, tuple)):
            return torch.FloatTensor(value)
        if self._decodes_on_device() and isinstance(value, (bytes, bytearray)) \
                and value[:3] == b"\xff\xd8\xff":
            return self.tensor_processing(decode_jpeg(
                torch.frombuffer(bytearray(value), dtype=torch.uint8),
                mode=ImageReadMode.RGB, device=self.device))
        return self.image_processing(decode_image(value, rgb=self.converts_to_rgb))

    def _decodes_on_device(self) -> bool:
        return bool(self.tensor_processing is not None
                    and (self.model_yaml_config.get("handler") or {}).get("decode_on_device"))

    @property
    def converts_to_rgb(self) -> bool:
        """Whether images become RGB before ``image_processing``: only for nbserve's own
        transforms, which take three channels; never for a handler's own."""
        if "image_processing" in vars(self):
            return False
        owner = next(c for c in type(self).__mro__ if "image_processing" in vars(c))
        return owner.__module__.startswith("nbserve.handlers.")

    def get_insights(self, tensor_data, _, target=0):
        try:
            from captum.attr import IntegratedGradients
        except ImportError:
            raise PredictionException("Explanations need captum: pip install captum", 501) from None
        return IntegratedGradients(self.model).attribute(tensor_data, target=target, n_steps=15).tolist()
