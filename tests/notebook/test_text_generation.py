"""A language model served from a kernel: ``%serve model --tokenizer tok`` prints how to call
it with the ``openai`` client (its key named, never printed), ``%predict chat "..."`` streams
the answer into the cell, the official client gets the same answer over HTTP, and the chat
box answers and stops."""

import threading

import openai

from tests.support.jupyter_app import free_port
from tests.support.kernel import Kernel, text, usage_error

LOAD = '''
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained({folder!r})
tok = AutoTokenizer.from_pretrained({folder!r})
'''


def test_serve_a_language_model_from_a_kernel_and_call_it(chat_model, tmp_path):
    port = free_port()
    env = {"JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
           "NBSERVE_CACHE_DIR": str(tmp_path / "cache")}
    with Kernel(tmp_path, env=env) as kernel:
        kernel.ok("%load_ext nbserve\nimport nbserve")
        kernel.ok(LOAD.format(folder=str(chat_model)))
        served = text(kernel.ok(f"%serve model --tokenizer tok --model-name chat "
                                f"--inference-address http://127.0.0.1:{port}"))
        key = kernel.value('nbserve.session.current.keys["inference"]')
        assert f"base_url=\"http://127.0.0.1:{port}/v1\"" in served, served
        assert key not in served

        streamed = text(kernel.ok('answer = %predict chat "Where is the cat?"'))
        assert streamed.strip() == "The cat sat on the mat."
        assert kernel.value("str(answer)") == "The cat sat on the mat."

        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key)
        answer = client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "Where is the cat?"}],
            temperature=0)
        assert answer.choices[0].message.content == "The cat sat on the mat."

        kernel.ok("measured = %bench chat --llm --streams 1,3 --seconds 1")
        assert kernel.value("[(r.streams, set(r.statuses)) for r in measured.results]") == \
            [(1, {200}), (3, {200})]
        assert kernel.value("all(r.tokens > 0 and r.ttft_ms for r in measured.results)")
        # A variable's prompts, asked in turn: every answer is the cat's.
        kernel.ok("questions = ['Where is the cat?']")
        kernel.ok("asked = %bench chat questions --llm --streams 2 --seconds 1")
        answered, tokens = kernel.value("(asked.results[0].statuses[200], "
                                        "asked.results[0].tokens)")
        assert answered > 0 and tokens == answered * answer.usage.completion_tokens
        kernel.ok("messages = [{'role': 'user', 'content': 'Hi'}]")
        refused = kernel.run("%bench chat messages --llm --streams 1 --seconds 1")
        assert "neither a prompt nor a list of them" in usage_error(refused)

        kernel.ok("box = nbserve.widgets.Chat('chat', temperature=0)\nbox\n"
                  "box.send('Where is the cat?')\nbox.wait(30)")
        assert kernel.value("box.messages[-1]") == {"role": "assistant",
                                                    "content": "The cat sat on the mat."}
        # While it generates (8 sequences of 230 tokens), %serve's table shows the sequences,
        # the cache and the rate; then that nothing runs.
        busy = threading.Thread(target=client.chat.completions.create, kwargs=dict(
            model="chat", messages=[{"role": "user", "content": "Hi"}], n=8, max_tokens=230,
            extra_body={"ignore_eos": True}))
        busy.start()
        row = kernel.value("get_ipython().run_line_magic('serve', '').rows[0]")
        while busy.is_alive() and row["tok/s"] == "0":
            row = kernel.value("get_ipython().run_line_magic('serve', '').rows[0]")
        busy.join()
        assert row["sequences"] == "8 running, 0 waiting", row
        assert float(row["tok/s"]) > 0 and 0 < float(row["KV cache"].rstrip("%")) <= 100, row
        assert "tok/s" in kernel.value("str(get_ipython().run_line_magic('serve', ''))")
        idle = kernel.value("get_ipython().run_line_magic('serve', '').rows[0]")
        assert (idle["sequences"], idle["tok/s"]) == ("0 running, 0 waiting", "0"), idle

        # Stop cancels: the sequence leaves the batch long before its 200 tokens.
        kernel.ok("import time\nlong = nbserve.widgets.Chat('chat', max_tokens=200, "
                  "ignore_eos=True)\nlong.send('Hi')\n"
                  "while not long._reply: time.sleep(0.005)\nlong.stop()\nlong.wait(30)\n"
                  "time.sleep(0.5)\nhandler = nbserve.session.current.engine.get('chat')"
                  ".workers[0].service.handler")
        assert kernel.value("long.messages[-1]['content'].endswith('[stopped]')")
        assert kernel.value("len(handler.running)") == 0
        assert not kernel.value("any(m.batch_processor.has_pending_requests() "
                                "for m in handler.managers.values())")
        assert kernel.value("len(tok.encode(long.messages[-1]['content']))") < 150
        kernel.ok("%serve --stop")
