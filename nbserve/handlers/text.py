"""``TextHandler``: the text clean-up TorchServe's text handlers apply, and the source vocabulary."""

from __future__ import annotations

import os
import re
import string
import unicodedata

import torch

from nbserve.handlers.base import BaseHandler

_HTML = re.compile("<.*?>|&([a-z0-9]+|#[0-9]{1,6}|#x[0-9a-f]{1,6});")
_CONTRACTIONS = {
    "ain't": "is not", "aren't": "are not", "can't": "cannot", "couldn't": "could not",
    "didn't": "did not", "doesn't": "does not", "don't": "do not", "hadn't": "had not",
    "hasn't": "has not", "haven't": "have not", "he's": "he is", "i'd": "i would",
    "i'll": "i will", "i'm": "i am", "i've": "i have", "isn't": "is not", "it's": "it is",
    "let's": "let us", "shouldn't": "should not", "that's": "that is", "there's": "there is",
    "they're": "they are", "they've": "they have", "wasn't": "was not", "we're": "we are",
    "we've": "we have", "weren't": "were not", "what's": "what is", "won't": "will not",
    "wouldn't": "would not", "you'd": "you would", "you'll": "you will", "you're": "you are",
    "you've": "you have",
}
_CONTRACTION_PATTERN = re.compile(
    "(" + "|".join(map(re.escape, _CONTRACTIONS)) + ")", flags=re.IGNORECASE)
# torchtext's "basic_english" tokenizer, as TorchServe copied it.
_BASIC_ENGLISH = [(re.compile(p), r) for p, r in [
    (r"\'", " '  "), (r"\"", ""), (r"\.", " . "), (r"<br \/>", " "), (r",", " , "),
    (r"\(", " ( "), (r"\)", " ) "), (r"\!", " ! "), (r"\?", " ? "), (r"\;", " "), (r"\:", " "),
    (r"\s+", " "),
]]


def ngrams_iterator(tokens, ngrams):
    """The tokens, then their bigrams, trigrams... up to ``ngrams``, joined by spaces."""
    yield from tokens
    for n in range(2, ngrams + 1):
        for gram in zip(*[tokens[i:] for i in range(n)]):
            yield " ".join(gram)


class TextHandler(BaseHandler):
    """Base of the text handlers: clean-up steps and the ``source_vocab.pt`` of the archive."""

    def __init__(self):
        super().__init__()
        self.source_vocab = None

    def initialize(self, context):
        super().initialize(context)
        path = os.path.join(context.system_properties["model_dir"], "source_vocab.pt")
        if not os.path.isfile(path):
            raise RuntimeError("Missing the source_vocab.pt file (a token -> index dict).")
        self.source_vocab = torch.load(path, weights_only=True)

    def token_index(self, token: str) -> int:
        vocab = self.source_vocab
        if token in vocab:
            return vocab[token]
        return vocab.get("<unk>", 0) if isinstance(vocab, dict) else vocab[token]

    def _remove_html_tags(self, text):
        return _HTML.sub("", text)

    def _expand_contractions(self, text):
        def expand(match):
            word = match.group(0)
            expanded = _CONTRACTIONS[word.lower()]
            return word[0] + expanded[1:]

        return _CONTRACTION_PATTERN.sub(expand, text).replace("'", "")

    def _remove_accented_characters(self, text):
        return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("utf-8", "ignore")

    def _remove_punctuation(self, text):
        return text.translate(str.maketrans("", "", string.punctuation))

    def _tokenize(self, text):
        text = text.lower()
        for pattern, replacement in _BASIC_ENGLISH:
            text = pattern.sub(replacement, text)
        return text.split()
