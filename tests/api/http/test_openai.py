"""OpenAI's API over real HTTP, with the official ``openai`` client (sync and async, streamed
and not), against ``nbserve serve --models chat=FOLDER`` (the model in a worker process) and
under TorchServe's route form; OpenAI's errors; a client that leaves stops its generation."""

import asyncio
import json
import time
import urllib.request

import httpx
import openai
import pytest

from tests.support.helpers import nbserve_serve
from tests.support.llm import generated_tokens

HI = [{"role": "user", "content": "Hi"}]
HELLO = "Hello! How can I help you today?"


@pytest.fixture(scope="module")
def served(chat_model, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("openai")
    process, ports, _ = nbserve_serve("--models", f"chat={chat_model}", "--ncs", "--no-grpc",
                                      cwd=cwd)
    keys = json.loads((cwd / "key_file.json").read_text())
    yield f"http://127.0.0.1:{ports['inference']}", keys["inference"]["key"], ports
    process.terminate()
    process.wait(30)


@pytest.fixture
def client(served):
    url, key, _ = served
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)


def test_models_and_chat_with_the_openai_client(served, client):
    url, key, _ = served
    assert [m.id for m in client.models.list()] == ["chat"]
    card = client.models.retrieve("chat")
    assert (card.id, card.object, card.owned_by) == ("chat", "model", "nbserve")
    request = urllib.request.Request(f"{url}/v1/models/chat",
                                     headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request) as answer:  # KServe v1's fields on the same path
        assert json.loads(answer.read())["ready"] is True

    answer = client.chat.completions.create(model="chat", messages=HI, temperature=0)
    assert answer.object == "chat.completion" and answer.id.startswith("chatcmpl-")
    assert answer.choices[0].message.role == "assistant"
    assert answer.choices[0].message.content == HELLO
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens

    completion = client.completions.create(model="chat", prompt="The cat", max_tokens=12,
                                           temperature=0, echo=True, stop=[" on"])
    assert completion.choices[0].text == "The cat sat"
    assert completion.choices[0].finish_reason == "stop"


def test_a_stream_is_server_sent_events_flushed_as_tokens_come(served, client):
    chunks = list(client.chat.completions.create(
        model="chat", messages=HI, temperature=0, stream=True,
        stream_options={"include_usage": True}))
    texts = [c.choices[0].delta.content for c in chunks if c.choices]
    assert len(texts) > 3 and "".join(t or "" for t in texts) == HELLO
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 3

    url, key, _ = served
    with httpx.stream("POST", f"{url}/v1/chat/completions", timeout=30,
                      headers={"Authorization": f"Bearer {key}"},
                      json={"model": "chat", "messages": HI, "stream": True,
                            "temperature": 0}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"


def test_the_async_client_and_concurrent_greedy_streams_agree(served):
    """In the worker process, beside sampling streams (OpenAI's default temperature), which
    its other manager decodes."""
    url, key, _ = served

    async def ask(client, question, **sampling):
        stream = await client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": question}], stream=True,
            **(sampling or {"temperature": 0}))
        return "".join([c.choices[0].delta.content or "" async for c in stream])

    async def main():
        async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key) as client:
            alone = await ask(client, "Where is the cat?")
            sampled = [ask(client, "Hi", top_p=0.9, max_tokens=8) for _ in range(4)]
            together = await asyncio.gather(*(ask(client, q) for q in
                                              ["Where is the cat?", "Hi"] * 8), *sampled)
            return alone, together[:16]  # a sampled stream that failed would have raised

    alone, together = asyncio.run(main())
    assert alone == "The cat sat on the mat."
    assert together == [alone, HELLO] * 8


def test_logprobs_and_a_seed_through_the_client(client):
    answer = client.chat.completions.create(model="chat", messages=HI, temperature=0,
                                            logprobs=True, top_logprobs=2)
    content = answer.choices[0].logprobs.content
    assert "".join(t.token for t in content) == HELLO
    assert all(t.logprob <= 0 and len(t.top_logprobs) == 2 for t in content)
    twice = [client.chat.completions.create(model="chat", messages=HI, temperature=1.2, seed=3,
                                            max_tokens=10).choices[0].message.content
             for _ in range(2)]
    assert twice[0] == twice[1]


def test_torchserves_route_form_and_its_plain_prompt(served):
    url, key, _ = served
    client = openai.OpenAI(base_url=f"{url}/predictions/chat/1.0/v1", api_key=key)
    assert client.chat.completions.create(model="chat", messages=HI,
                                          temperature=0).choices[0].message.content == HELLO
    prompt = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    with httpx.stream("POST", f"{url}/predictions/chat", timeout=30,
                      headers={"Authorization": f"Bearer {key}"},
                      json={"prompt": prompt, "max_new_tokens": 40}) as response:
        parts = list(response.iter_text())
    assert "".join(parts) == HELLO


def test_openais_errors(served, client):
    url, _, ports = served
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="nothing", messages=HI)
    assert missing.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="chat", messages=HI, temperature=5)
    assert bad.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError) as long:
        client.chat.completions.create(model="chat", messages=[
            {"role": "user", "content": "cat " * 5000}])
    assert "maximum context length" in long.value.body["message"]
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="chat", messages=[])
    before = generated_tokens(ports["metrics"])
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{url}/v1", api_key="wrong",
                      max_retries=0).chat.completions.create(model="chat", messages=HI)
    time.sleep(0.5)
    assert generated_tokens(ports["metrics"]) == before  # nothing was generated for it


def test_a_client_that_leaves_stops_its_generation_in_the_worker_process(served):
    url, key, ports = served

    def ask(leave: bool) -> None:
        with httpx.stream("POST", f"{url}/v1/completions", timeout=30,
                          headers={"Authorization": f"Bearer {key}"},
                          json={"model": "chat", "prompt": "The", "max_tokens": 200,
                                "ignore_eos": True, "stream": True}) as response:
            lines = response.iter_lines()
            if leave:
                next(lines)  # the first tokens came; then the client leaves
            else:
                list(lines)
        time.sleep(1)

    before = generated_tokens(ports["metrics"])
    ask(leave=False)
    # vLLM's ignore_eos: all of max_tokens
    assert generated_tokens(ports["metrics"]) == before + 200
    ask(leave=True)
    after_leaving = generated_tokens(ports["metrics"])
    time.sleep(1)
    assert generated_tokens(ports["metrics"]) == after_leaving < before + 200 + 150
