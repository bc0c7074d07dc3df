"""A tiny chat model built in seconds, offline: a byte-level BPE tokenizer trained on a few
sentences, a ChatML chat template, and a small Llama trained on those sentences as chats, so
greedy answers are sentences that end (with ``<|im_end|>``) rather than random tokens.

The tests serve it, and the language model tutorial stands it in when it cannot download one:
``python examples/tiny_chat/model.py FOLDER`` writes it as ``save_pretrained`` does."""

from __future__ import annotations

from pathlib import Path

SENTENCES = [
    "The cat sat on the mat.",
    "A model is served from the notebook.",
    "Tokens stream to the client one by one.",
    "The kernel answers while the cell runs.",
    "Hello! How can I help you today?",
    "Continuous batching keeps the device busy.",
    "Every request gets its answer.",
    "The dog ran in the park.",
]
QUESTIONS = ["Where is the cat?", "What is served?", "How do tokens arrive?",
             "When does the kernel answer?", "Hi", "Why batch?", "What do requests get?",
             "Where did the dog run?"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def build_tiny_chat_model(folder: Path, seconds: float = 8.0, seed: int = 0) -> Path:
    """Write a Hugging Face model folder (``save_pretrained``'s files) into ``folder``."""
    import time

    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(seed)
    chats = [f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n{a}<|im_end|>\n"
             for q, a in zip(QUESTIONS, SENTENCES)]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(SENTENCES + QUESTIONS + chats, trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>",
                                        bos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                        chat_template=CHAT_TEMPLATE)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    batch = tokenizer(chats, return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    ends = time.monotonic() + seconds
    while time.monotonic() < ends:
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


if __name__ == "__main__":
    import sys

    print(build_tiny_chat_model(Path(sys.argv[1] if len(sys.argv) > 1 else "tiny-chat")))
