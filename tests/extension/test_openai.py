"""OpenAI's client through Jupyter: ``base_url=f"{jupyter_url}nbserve/v1"`` with Jupyter's token
as the key; the model named in the body picks the kernel, tokens stream through."""

import openai
import pytest

from tests.support.jupyter_app import TOKEN


@pytest.fixture(scope="module")
def kernel(jupyter, chat_model):
    kernel = jupyter.start_kernel()
    kernel.run(f"%load_ext nbserve\n%serve {chat_model} --model-name chat")
    yield kernel
    kernel.shutdown()


def test_the_openai_client_through_jupyter(jupyter, kernel):
    client = openai.OpenAI(base_url=f"{jupyter.url}nbserve/v1", api_key=TOKEN, max_retries=0)
    assert [m.id for m in client.models.list()] == ["chat"]
    answer = client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "Hi"}], temperature=0)
    assert answer.choices[0].message.content == "Hello! How can I help you today?"
    chunks = list(client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "Hi"}], temperature=0, stream=True))
    assert len(chunks) > 3
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
        "Hello! How can I help you today?"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="absent", messages=[{"role": "user",
                                                                  "content": "Hi"}])
    with pytest.raises(openai.PermissionDeniedError):  # Jupyter's own check, before any kernel
        openai.OpenAI(base_url=f"{jupyter.url}nbserve/v1", api_key="wrong",
                      max_retries=0).chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "Hi"}])
