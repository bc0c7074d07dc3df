"""``text_classifier``: cleaned text, its n-grams through an EmbeddingBag model, and a softmax.

TorchServe's handler reads only the first request of a batch; this one answers every request,
passing the batch to the model as one flat token tensor with offsets.
"""

import torch
import torch.nn.functional as F

from nbserve.handlers.base import timed
from nbserve.handlers.text import TextHandler, ngrams_iterator
from nbserve.handlers.util import PredictionException, map_class_to_label, request_body


class TextClassifier(TextHandler):
    """Answers ``{"label": probability, ...}`` over every class, per text."""

    ngrams = 2

    @timed
    def preprocess(self, data):
        texts = [self.words(row) for row in data]
        indices = [[self.token_index(t) for t in ngrams_iterator(tokens, self.ngrams)]
                   for tokens in texts]
        offsets = torch.tensor([0] + [len(i) for i in indices[:-1]], device=self.device).cumsum(0)
        flat = torch.tensor([i for row in indices for i in row], dtype=torch.long, device=self.device)
        return flat, offsets

    def words(self, row) -> list[str]:
        """A request's text, cleaned as TorchServe cleans it, as words."""
        text = request_body(row)
        if isinstance(text, (bytes, bytearray)):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError:
                raise PredictionException("Input is not UTF-8 text.", 400) from None
        if not isinstance(text, str):
            raise PredictionException("Input must be text.", 400)
        text = self._remove_html_tags(text).lower()
        text = self._remove_accented_characters(self._expand_contractions(text))
        return self._tokenize(self._remove_punctuation(text))

    @timed
    def inference(self, data, *args, **kwargs):
        tokens, offsets = data
        with torch.inference_mode():
            return self.model(tokens, offsets)

    @timed
    def postprocess(self, data):
        return map_class_to_label(F.softmax(data, dim=1).tolist(), self.mapping)

    def explain_handle(self, data_preprocess, raw_data):
        """Each word's (and n-gram's) importance for ``target`` (TorchServe's answer: captum's
        Layer Integrated Gradients over the embedding, summarised as TorchServe does)."""
        try:
            from captum.attr import LayerIntegratedGradients, TokenReferenceBase
        except ImportError:
            raise PredictionException("Explanations need captum: pip install captum", 501) from None
        row = raw_data[0]
        target = (row.get("target") if isinstance(row, dict) else None) or 0
        tokens, offsets = data_preprocess
        reference = TokenReferenceBase().generate_reference(tokens.shape[0], device=self.device)
        layer = LayerIntegratedGradients(self.model, self.model.embedding)
        attributions = layer.attribute(tokens, reference.squeeze(0), additional_forward_args=offsets,
                                       target=target)
        attributions = F.softmax(attributions, dim=-1)
        attributions = attributions / torch.norm(attributions.sum(dim=-1))
        return [{"importances": attributions.tolist(), "words": self.words(row)}]
