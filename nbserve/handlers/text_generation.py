"""Text generation: a causal language model and its tokenizer, run by TorchServe's continuous
batching (each ``handle`` call is one step over the running requests; one stays while its
answer carries ``ts_stream_next: true``) on transformers' ``ContinuousBatchingManager``, whose
paged KV cache lets new sequences join between decode steps and finished ones leave.

A request is OpenAI's, as :mod:`nbserve.api.openai` hands it on (``"endpoint":
"chat.completions"`` with ``messages``, or ``"completions"`` with ``prompt``), answered with
parts ``{"choices": [{"index", "text", "finish_reason"}], "usage"}``; or TorchServe's LLM
examples' ``{"prompt", "max_new_tokens"}``, answered with text parts. A request that leaves
(its client went away, or it timed out) has its sequences cancelled as soon as nbserve's
continuous loop says so (``on_requests_gone``). A bad request is answered alone, with 400 and
the parameter it is about.

Settings, under ``handler:`` in model-config.yaml (vLLM's names, which ``ts.llm_launcher``
writes, are read too): ``model_path`` (else the archive's folder), ``max_num_seqs`` (16),
``max_model_len`` (the model's context, at most 4096), ``page_size`` (32 tokens) and, on a
CPU, ``torch_threads`` (1). The KV cache is sized from them, not from free memory.

Greedy requests (``temperature: 0``) and sampling ones are decoded by two managers: the
manager applies its logits processors (temperature, top_p) to every sequence of its batch at
every step, which made greedy decoding 1.3-1.6x slower (measured, 8 and 32 sequences on the
tiny model). The sampling one, and its KV cache, start with the first request that samples.
"""

from __future__ import annotations

import copy
import logging
import math
import sys
import threading
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import torch

from nbserve.errors import BadRequest
from nbserve.handlers.generation_request import (
    ENDPOINTS,
    Choice,
    Generation,
    GenerationError,
    number,
    optional_int,
    prompt_text,
    request_body,
    safe_end,
    stops,
)
from nbserve.handlers.metrics import MetricTypes

logger = logging.getLogger(__name__)

#: The handler names that mean this handler: nbserve's, and TorchServe's vLLM handler, whose
#: archives (``handler.model_path``, ``handler.vllm_engine_config``) it serves with transformers.
HANDLER_NAMES = ("text_generation", "vllm_handler")
DEFAULT_MAX_NUM_SEQS = 16
DEFAULT_MAX_MODEL_LEN = 4096
#: The seconds over which TokensPerSecond is averaged, and how often the figures are recorded
#: while sequences run (see TextGenerationHandler._record).
RATE_WINDOW_S = 2.0
RECORD_EVERY_S = 0.5


def generation_settings(model_yaml: dict) -> dict:
    """``handler:``'s settings, vLLM's engine config beneath nbserve's names."""
    handler = dict((model_yaml or {}).get("handler") or {})
    engine = handler.get("vllm_engine_config") or {}
    return {"model_path": handler.get("model_path"),
            "max_num_seqs": int(handler.get("max_num_seqs")
                                or engine.get("max_num_seqs") or DEFAULT_MAX_NUM_SEQS),
            "max_model_len": handler.get("max_model_len") or engine.get("max_model_len"),
            "page_size": int(handler.get("page_size") or 32),
            "torch_threads": handler.get("torch_threads")}


def serves_text_generation(handler: Any) -> bool:
    """Whether an archive's handler (its name, or a live handler object) is this one."""
    if isinstance(handler, str):
        return handler.split(":")[0].removesuffix(".py") in HANDLER_NAMES
    return isinstance(handler, TextGenerationHandler)


def model_yaml_defaults(model_yaml: dict) -> dict:
    """model-config.yaml as this handler needs it (unless the file says otherwise): continuous
    batching, as many running requests as ``max_num_seqs``, and one worker, whose batch is
    where the concurrency is."""
    settings = generation_settings(model_yaml)
    return {"continuousBatching": True, "batchSize": settings["max_num_seqs"],
            "minWorkers": 1, "maxWorkers": 1, **(model_yaml or {})}


def _failed(context, index: int, status: int, kind: str, message: str, **fields) -> dict:
    """One request's error answer, its status set, beside requests that go on."""
    context.set_response_status(status, message, index)
    return {"code": status, "type": kind, "message": message, **fields}


def live_handler(model, tokenizer=None) -> TextGenerationHandler:
    """The handler for a language model served from the notebook: a causal LM and its
    tokenizer, or a ``text-generation`` pipeline. A copy is served, so training on in the
    notebook changes nothing served until it is served again."""
    if tokenizer is None:  # a pipeline
        model, tokenizer = model.model, model.tokenizer
    if not callable(getattr(model, "generate", None)):
        raise BadRequest(f"Cannot serve a {type(model).__name__} for text generation: "
                              "serve a transformers causal LM (AutoModelForCausalLM).")
    return TextGenerationHandler(copy.deepcopy(model), tokenizer)


def _is_causal_per_thread(config) -> None:
    """Make ``config.is_causal`` each thread's own. transformers' forward sets it for the call
    and restores it after; the managers' threads (which pass ``is_causal=False``) and
    ``generate``'s run forward passes on one model at once, and one thread's restore could
    leave another's value behind: ``generate`` then attended both ways (found as log
    probabilities 8% off the model's)."""
    local = threading.local()
    unset = object()
    default = config.__dict__.pop("is_causal", unset)  # its own value, if it has one

    def get(self):
        value = getattr(local, "value", default)
        if value is unset:
            raise AttributeError("is_causal")
        return value

    def set_(self, value):
        local.value = value

    def delete(self):
        del local.value

    base = type(config)
    config.__class__ = type(base.__name__, (base,), {
        "is_causal": property(get, set_, delete), "__module__": base.__module__})


class TextGenerationHandler:
    """TorchServe's handler contract, for a causal LM. Given ``model`` and ``tokenizer`` (as
    ``%serve model --tokenizer tok`` does), they are served as they are; else both load from
    the model's folder."""

    def __init__(self, model=None, tokenizer=None):
        self.model, self.tokenizer = model, tokenizer
        #: The continuous-batching managers, by whether they sample (see the module's doc).
        self.managers: dict[bool, Any] = {}
        self.metrics = None
        self.running: dict[str, Generation] = {}
        self._by_sequence: dict[str, tuple[str, int]] = {}
        self._counter = 0
        self._lock = threading.Lock()
        #: Requests run alone with generate (a seed, or log probabilities), one at a time.
        self._solo = ThreadPoolExecutor(1, thread_name_prefix="nbserve-generate")
        #: (when, how many) tokens the latest steps generated, for TokensPerSecond.
        self._recent: deque[tuple[float, int]] = deque()
        #: Tokens generated since the last record of the figures, and when that was.
        self._generated, self._recorded_at, self._recorded_sequences = 0, 0.0, 0

    def initialize(self, context) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        settings = generation_settings(context.model_yaml_config)
        properties = context.system_properties
        #: Where the figures go when no step is running (the last request left).
        self.metrics = context.metrics
        folder = Path(settings["model_path"] or properties.get("model_dir") or ".")
        device = (f"cuda:{properties['gpu_id']}" if torch.cuda.is_available()
                  and properties.get("gpu_id") is not None else "cpu")
        if self.tokenizer is None:
            self.tokenizer = AutoTokenizer.from_pretrained(folder)
        if self.model is None:
            self.model = AutoModelForCausalLM.from_pretrained(
                folder, dtype=torch.bfloat16 if device.startswith("cuda") else torch.float32)
        self.model = self.model.to(device).eval()
        _is_causal_per_thread(self.model.config)
        if device == "cpu" and (settings["torch_threads"] or "ipykernel" not in sys.modules):
            # Measured (bench/llm.py, 2 cores): one intra-op thread decodes faster than two
            # once HTTP and the clients need a core too; handler.torch_threads overrides it.
            # In a kernel the setting is the notebook's own (torch's is per process).
            torch.set_num_threads(int(settings["torch_threads"] or 1))
        context_length = getattr(self.model.config, "max_position_embeddings", None) \
            or DEFAULT_MAX_MODEL_LEN
        self.max_model_len = int(settings["max_model_len"]
                                 or min(context_length, DEFAULT_MAX_MODEL_LEN))
        self.max_num_seqs = settings["max_num_seqs"]
        #: Read by nbserve.serving.loops.ContinuousLoop: how many requests may run at once,
        #: and that the forward passes (the manager's thread) are not its steps to time.
        self.max_running = self.max_num_seqs
        self.sets_own_threads = True
        self.eos_token_ids = self._eos_token_ids()
        self.pad_token_id = self.tokenizer.pad_token_id or self.eos_token_ids[0]
        self.page_size = settings["page_size"]
        self.num_blocks = math.ceil(self.max_num_seqs * self.max_model_len / self.page_size)
        self._manager(samples=False)

    def _eos_token_ids(self) -> list[int]:
        ids = self.model.generation_config.eos_token_id
        ids = list(ids) if isinstance(ids, (list, tuple)) else [ids]
        if self.tokenizer.eos_token_id is not None:
            ids.append(self.tokenizer.eos_token_id)
        return sorted({i for i in ids if i is not None})

    def _manager(self, samples: bool):
        """The manager that decodes greedy or sampling requests, started when first needed."""
        from transformers import GenerationConfig
        from transformers.generation.configuration_utils import ContinuousBatchingConfig

        if samples in self.managers:
            return self.managers[samples]
        # Sampling: the temperature and top_p processors present (their values here are
        # placeholders), so that each request sets its own; top_k=0 leaves top-k out.
        processors = {"temperature": 0.5, "top_p": 0.99, "top_k": 0} if samples else {}
        generation = GenerationConfig(
            do_sample=samples, max_new_tokens=self.max_model_len,
            eos_token_id=self.eos_token_ids, pad_token_id=self.pad_token_id, **processors)
        cache = ContinuousBatchingConfig(
            page_size=self.page_size, num_blocks=self.num_blocks,
            max_batch_tokens=max(self.max_model_len, 256),
            max_requests_per_batch=self.max_num_seqs, per_request_processors=samples,
            allow_block_sharing=False)
        manager = self.model.init_continuous_batching(generation_config=generation,
                                                      continuous_batching_config=cache)
        manager.start()
        logger.info("KV cache (%s): %d blocks of %d tokens, for %d sequences of up to %d "
                    "tokens", "sampling" if samples else "greedy", self.num_blocks,
                    self.page_size, self.max_num_seqs, self.max_model_len)
        self.managers[samples] = manager
        return manager

    # One step.

    def handle(self, data: list, context) -> list:
        ids = [context.get_request_id(i) for i in range(len(data))]
        answers: dict[int, Any] = {}
        for i, (request_id, row) in enumerate(zip(ids, data)):
            if request_id in self.running:
                continue
            try:
                self._start(request_id, request_body(row))
            except GenerationError as error:
                answers[i] = _failed(context, i, error.status, "BadRequestError", str(error),
                                     param=error.param)
        if self.running:
            self._collect(context.metrics)
        for i, request_id in enumerate(ids):
            if i in answers:
                continue
            generation = self.running[request_id]
            failed = generation.solo.exception() if generation.solo and generation.solo.done() \
                else None
            if failed is not None:  # its own failure, answered alone
                answers[i] = _failed(context, i, 500, "InternalServerException",
                                     f"{type(failed).__name__}: {failed}")
                self._forget(request_id)
                continue
            answers[i] = self._part(generation)
            finished = all(choice.done for choice in generation.choices)
            context.set_response_header(i, "ts_stream_next", "false" if finished else "true")
            if finished:
                self._forget(request_id)
        return [answers[i] for i in range(len(data))]

    def _start(self, request_id: str, body: dict) -> None:
        generation, sampling = self._read(body)
        self.running[request_id] = generation
        if generation.logprobs is not None or body.get("seed") is not None:
            # The manager has neither a random generator per sequence nor the model's own
            # log probabilities: such a request runs alone, with generate, answered whole.
            generation.solo = self._solo.submit(self._generate, generation, sampling,
                                                body.get("seed"))
            return
        generation.manager = self._manager(samples=sampling is not None)
        for index, choice in enumerate(generation.choices):
            self._by_sequence[choice.sequence_id] = (request_id, index)
            generation.manager.add_request(
                generation.prompt_ids, request_id=choice.sequence_id,
                max_new_tokens=generation.max_tokens, streaming=True,
                eos_token_id=self._eos_of(generation), **(sampling or {}))

    def _collect(self, metrics) -> None:
        """Wait for the next tokens (the manager's thread decodes), then take all there are;
        TorchServe-style handler metrics of them."""
        solo = [g for g in self.running.values() if g.solo is not None]
        decoding = [m for m in self.managers.values()
                    if any(g.manager is m for g in self.running.values())]
        output = self._next_output(decoding, timeout=0.02 if solo else 30)
        if output is None and solo:
            wait([g.solo for g in solo], timeout=None if not decoding else 0,
                 return_when=FIRST_COMPLETED)
        elif output is None:
            error = next((m.background_thread_status.fatal_error for m in decoding
                          if m.background_thread_status.fatal_error), None)
            raise RuntimeError(f"Generation stopped: {error or 'no tokens for 30 s'}")
        outputs = [output] if output is not None else []
        for manager in decoding:  # and all the others there are
            while (output := manager.get_result(timeout=0)) is not None:
                outputs.append(output)
        now, generated = time.monotonic(), 0
        for generation in solo:
            if generation.solo.done() and generation.solo.exception() is None \
                    and not generation.choices[0].done:
                for choice, (tokens, logprobs) in zip(generation.choices,
                                                      generation.solo.result()):
                    choice.tokens, choice.logprobs, choice.done = tokens, logprobs, True
                    choice.finish_reason = self._finish_reason(choice.tokens)
                    generated += len(tokens)
        for output in outputs:
            where = self._by_sequence.get(output.request_id)
            if where is not None and where[0] in self.running:
                generation = self.running[where[0]]
                choice = generation.choices[where[1]]
                if not choice.done:
                    if output.error:
                        raise RuntimeError(output.error)
                    new = len(output.generated_tokens) - len(choice.tokens)
                    if new > 0:
                        generated += new
                        if choice.first_token_at is None:
                            choice.first_token_at = now
                            self._observe(metrics, "TimeToFirstToken", now - generation.started)
                        choice.last_token_at = now
                    choice.tokens = list(output.generated_tokens)
                    if output.is_finished():
                        choice.done = True
                        choice.finish_reason = self._finish_reason(choice.tokens)
                        if len(choice.tokens) > 1 and choice.first_token_at is not None:
                            self._observe(metrics, "InterTokenLatency",
                                          (choice.last_token_at - choice.first_token_at)
                                          / (len(choice.tokens) - 1))
        if metrics is not None:
            self._record(metrics, now, generated)

    @staticmethod
    def _next_output(managers: list, timeout: float):
        """The next output of any of ``managers`` (None after ``timeout`` seconds)."""
        if len(managers) < 2:
            return managers[0].get_result(timeout=timeout) if managers else None
        ends = time.monotonic() + timeout
        while time.monotonic() < ends:
            for manager in managers:
                output = manager.get_result(timeout=0.002)
                if output is not None:
                    return output
        return None

    @staticmethod
    def _observe(metrics, name: str, seconds: float) -> None:
        if metrics is not None:
            metrics.add_time(name, round(seconds * 1000, 3), metric_type=MetricTypes.HISTOGRAM)

    def _record(self, metrics, now: float, generated: int) -> None:
        """The figures of the steps since the last record: tokens generated, sequences
        running, the KV cache's use, and tokens per second over the last
        :data:`RATE_WINDOW_S`. Recorded every :data:`RECORD_EVERY_S`, when the first sequence
        joins and when the last one leaves (so 0 once nothing runs), not at every step: each
        record is a line of model_metrics.log, and a step takes milliseconds."""
        sequences = [(g, c) for g in self.running.values() for c in g.choices if not c.done]
        self._recent.append((now, generated))
        self._generated += generated
        idle_changed = (not sequences) != (not self._recorded_sequences)
        if not idle_changed and now - self._recorded_at < RECORD_EVERY_S:
            return
        while now - self._recent[0][0] > RATE_WINDOW_S:
            self._recent.popleft()
        span = now - self._recent[0][0]
        # The oldest step's tokens came before the span began.
        rate = (sum(n for _, n in self._recent) - self._recent[0][1]) / span \
            if sequences and span > 0 else 0.0
        blocks = sum(math.ceil((len(g.prompt_ids) + len(c.tokens)) / self.page_size)
                     for g, c in sequences)
        metrics.add_counter("GeneratedTokens", self._generated)
        metrics.add_metric("RunningSequences", len(sequences), "count",
                           metric_type=MetricTypes.GAUGE)
        metrics.add_percent("KVCacheUsage",
                            round(100 * blocks / (self.num_blocks * len(self.managers)), 2))
        metrics.add_metric("TokensPerSecond", round(rate, 1), "tokens/s",
                           metric_type=MetricTypes.GAUGE)
        self._generated, self._recorded_at, self._recorded_sequences = 0, now, len(sequences)
        if not sequences:
            self._recent.clear()

    def _eos_of(self, generation: Generation) -> list[int]:
        """The tokens that end its sequences: none with vLLM's ``ignore_eos``."""
        return [] if generation.ignore_eos else self.eos_token_ids

    def _finish_reason(self, tokens: list[int]) -> str:
        return "stop" if tokens and tokens[-1] in self.eos_token_ids else "length"

    def _generate(self, generation: Generation, sampling: dict, seed: int | None) -> list:
        """A request run alone with ``generate``: each choice's tokens (to and with the end
        of sequence) and its tokens' log probabilities under the model, from ``seed``."""
        greedy = sampling is None
        n = 1 if greedy else len(generation.choices)
        prompt = torch.tensor([generation.prompt_ids], device=self.model.device)
        options = {"do_sample": False} if greedy else {
            "do_sample": True, "top_k": 0, **sampling}
        devices = [self.model.device] if self.model.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            if seed is not None:
                torch.manual_seed(seed)
            out = self.model.generate(
                prompt, max_new_tokens=generation.max_tokens, num_return_sequences=n,
                eos_token_id=self._eos_of(generation), pad_token_id=self.pad_token_id,
                output_logits=True, return_dict_in_generate=True, **options)
        top = generation.logprobs or 0
        choices = []
        for k in range(n):
            tokens = out.sequences[k][prompt.shape[1]:].tolist()
            ends = [i for i, t in enumerate(tokens) if t in self.eos_token_ids]
            tokens = tokens[:ends[0] + 1] if ends and not generation.ignore_eos else tokens
            logprobs = []
            for step, token in enumerate(tokens):
                scores = torch.log_softmax(out.logits[step][k].float(), dim=-1)
                best = torch.topk(scores, top) if top else None
                logprobs.append((token, scores[token].item(),
                                 list(zip(best.indices.tolist(), best.values.tolist()))
                                 if best is not None else []))
            choices.append((tokens, logprobs))
        return choices * len(generation.choices) if greedy else choices

    def _part(self, generation: Generation) -> Any:
        """What each choice has added since the last step (its text, cut at a stop string);
        None while nothing has (no part is sent)."""
        deltas, changed = [], False
        for index, choice in enumerate(generation.choices):
            if choice.decoded != len(choice.tokens):
                choice.text = self.tokenizer.decode(choice.tokens, skip_special_tokens=True)
                choice.decoded, changed = len(choice.tokens), True
            text = choice.text
            end = len(text)
            for stop in generation.stop:
                found = text.find(stop)
                if found != -1 and found < end:
                    end = found
            if end < len(text) and not choice.done:  # a stop string: this choice is over
                generation.manager.cancel_request(choice.sequence_id)
                choice.done, choice.finish_reason = True, "stop"
            elif end < len(text):
                choice.finish_reason = "stop"
            if not choice.done:  # hold back what may still become a stop string or a character
                end = min(end, safe_end(text, generation.stop))
            delta = text[choice.sent:end] if end > choice.sent else ""
            choice.sent = max(choice.sent, end)
            if index == 0 and generation.echo:
                delta, generation.echo = generation.echo + delta, ""
            entry = {"index": index, "text": delta,
                     "finish_reason": choice.finish_reason if choice.done else None}
            if generation.logprobs is not None:
                entry["logprobs"] = [self._logprob(t) for t in choice.logprobs
                                     if t[0] not in self.eos_token_ids]
            deltas.append(entry)
        finished = all(choice.done for choice in generation.choices)
        if not (changed or finished or generation.echo):
            return None
        if generation.endpoint == "text":
            return deltas[0]["text"]
        part = {"choices": deltas}
        if finished:
            completion = sum(len(c.tokens) for c in generation.choices)
            part["usage"] = {"prompt_tokens": len(generation.prompt_ids),
                             "completion_tokens": completion,
                             "total_tokens": len(generation.prompt_ids) + completion}
        return part

    def _logprob(self, entry: tuple) -> dict:
        """One token's log probability as OpenAI's chat answers it (the API layer writes the
        completions form from it)."""
        token, logprob, best = entry

        def described(token_id: int, value: float) -> dict:
            text = self.tokenizer.decode([token_id])
            return {"token": text, "logprob": value, "bytes": list(text.encode())}

        return dict(described(token, logprob),
                    top_logprobs=[described(t, v) for t, v in best])

    def on_requests_gone(self, request_ids: list[str]) -> None:
        """Stop generating for requests no longer running: nbserve's continuous loop says so
        after each step, as soon as they leave (those answered are forgotten already)."""
        for request_id in request_ids:
            generation = self.running.get(request_id)
            if generation is None:
                continue
            for choice in generation.choices:
                if not choice.done and generation.manager is not None:
                    generation.manager.cancel_request(choice.sequence_id)
            self._forget(request_id)
        if not self.running and self.metrics is not None:  # no step will say it is idle
            self._record(self.metrics, time.monotonic(), 0)

    def _forget(self, request_id: str) -> None:
        for choice in self.running.pop(request_id).choices:
            self._by_sequence.pop(choice.sequence_id, None)

    # A request's parameters, checked as OpenAI checks them.

    def _read(self, body: dict) -> tuple[Generation, dict | None]:
        """The request, and its sampling parameters (None: greedy)."""
        endpoint = body.get("endpoint", "text")
        echo = ""
        if endpoint == "chat.completions":
            prompt_ids = self._chat_prompt(body.get("messages"))
            max_tokens = optional_int(body, "max_completion_tokens") \
                or optional_int(body, "max_tokens")
        elif endpoint == "completions":
            prompt = prompt_text(body.get("prompt"))
            prompt_ids = self.tokenizer.encode(prompt)
            max_tokens = optional_int(body, "max_tokens", default=16)
            echo = prompt if body.get("echo") else ""
        else:
            prompt = body.get("prompt", body.get("data", body.get("body")))
            if not isinstance(prompt, str):
                raise GenerationError("'prompt' must be text.", "prompt")
            prompt_ids = self.tokenizer.encode(prompt)
            max_tokens = optional_int(body, "max_new_tokens", default=128)
        room = self.max_model_len - len(prompt_ids)
        if max_tokens is not None and max_tokens < 1:
            raise GenerationError("max_tokens must be at least 1.", "max_tokens")
        if room < 1 or (max_tokens or 0) > room:
            raise GenerationError(
                f"This model's maximum context length is {self.max_model_len} tokens. However, "
                f"you requested {len(prompt_ids) + (max_tokens or 0)} tokens "
                f"({len(prompt_ids)} in the messages, {max_tokens or 0} in the completion).",
                "messages" if endpoint == "chat.completions" else "prompt")
        temperature = number(body, "temperature", 1.0 if endpoint in ENDPOINTS else 0.0, 0, 2)
        top_p = number(body, "top_p", 1.0, 0, 1)
        n = optional_int(body, "n", default=1)
        if not 1 <= n <= self.max_num_seqs:
            raise GenerationError(f"n must be between 1 and {self.max_num_seqs}.", "n")
        logprobs = None
        if endpoint == "chat.completions" and body.get("logprobs"):
            logprobs = optional_int(body, "top_logprobs", default=0)
            if not 0 <= logprobs <= 20:
                raise GenerationError("top_logprobs must be between 0 and 20.", "top_logprobs")
        elif endpoint == "chat.completions" and body.get("top_logprobs"):
            raise GenerationError("top_logprobs needs logprobs: true.", "top_logprobs")
        elif endpoint == "completions" and body.get("logprobs") is not None:
            logprobs = optional_int(body, "logprobs")
            if not 0 <= logprobs <= 5:
                raise GenerationError("logprobs must be between 0 and 5.", "logprobs")
        optional_int(body, "seed")
        sampling = None if temperature == 0 else {"temperature": float(temperature),
                                                  "top_p": max(float(top_p), 1e-6)}
        with self._lock:
            self._counter += 1
            first = self._counter
        choices = [Choice(f"gen-{first}-{k}") for k in range(n)]
        return Generation(endpoint, list(prompt_ids), max_tokens or room, stops(body), choices,
                          echo, ignore_eos=body.get("ignore_eos") is True,
                          logprobs=logprobs), sampling

    def _chat_prompt(self, messages) -> list[int]:
        if not isinstance(messages, list) or not messages:
            raise GenerationError("'messages' must be a non-empty list.", "messages")
        for message in messages:
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise GenerationError("Each message needs a 'role' and a 'content'.", "messages")
            if isinstance(message.get("content"), list):  # OpenAI's content parts: the text ones
                message["content"] = "".join(part.get("text", "") for part in message["content"]
                                             if isinstance(part, dict))
        if self.tokenizer.chat_template is None:
            raise GenerationError("This model's tokenizer has no chat template: use "
                                  "/v1/completions.", "messages")
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                 tokenize=True)
        return list(ids["input_ids"] if hasattr(ids, "keys") else ids)

    def close(self) -> None:
        for manager in self.managers.values():
            manager.stop(block=False)
