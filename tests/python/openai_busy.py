"""The official `openai` client against a busy model.

Usage: openai_busy.py HOST:PORT

The server's gpt2 has one instance and no queue (`queue_timeout_ms = 0`).
A long batched OIP generation holds that instance; meanwhile a completion,
whole or streamed, and a chat completion get a 503 in OpenAI's error shape,
which the client raises as `openai.InternalServerError` with code
`model_busy`. Once the generation is done the client is served again.
Prints "openai busy: OK".
"""

import json
import sys
import threading
import time
import urllib.error
import urllib.request

import openai

BASE = f"http://{sys.argv[1]}"
client = openai.OpenAI(base_url=f"{BASE}/v1", api_key="unused", max_retries=0)


def post(path, body):
    request = urllib.request.Request(
        f"{BASE}{path}",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
    )
    return urllib.request.urlopen(request)


def inflight():
    with urllib.request.urlopen(f"{BASE}/metrics") as response:
        text = response.read().decode()
    return next(
        int(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("edgeserve_inflight_requests ")
    )


# Many prompts of 120 tokens each in one request: the instance is held for
# the whole batch.
held = {}


def hold():
    body = {
        "inputs": [{"name": "text", "shape": [96], "datatype": "BYTES", "data": ["Once"] * 96}],
        "parameters": {"max_tokens": 120},
    }
    with post("/v2/models/gpt2/infer", body) as response:
        held["status"] = response.status


holder = threading.Thread(target=hold)
holder.start()
while inflight() == 0:
    time.sleep(0.005)

# Whole and streamed completions: the client's typed exception, with the
# error object's fields.
for stream in (False, True):
    try:
        answer = client.completions.create(model="gpt2", prompt="Hi", max_tokens=4, stream=stream)
        raise AssertionError(f"served while busy (stream={stream}): {answer}")
    except openai.InternalServerError as e:
        assert e.status_code == 503, e
        assert set(e.body) == {"message", "type", "param", "code"}, e.body
        assert e.code == "model_busy" and e.type == "server_error", e.body
        assert "busy" in e.message, e.message
        assert int(e.response.headers["retry-after"]) >= 1, e.response.headers

# The raw answer of the chat endpoint: status and exactly OpenAI's shape.
try:
    post("/v1/chat/completions", {"model": "gpt2", "messages": [{"role": "user", "content": "Hi"}]})
    raise AssertionError("chat served while busy")
except urllib.error.HTTPError as e:
    assert e.code == 503, e
    body = json.load(e)
    assert list(body) == ["error"], body
    assert sorted(body["error"]) == ["code", "message", "param", "type"], body
    assert body["error"]["code"] == "model_busy", body

# Done holding: served again.
holder.join()
assert held["status"] == 200, held
answer = client.completions.create(model="gpt2", prompt="Hi", max_tokens=4)
assert answer.choices[0].finish_reason in ("length", "stop"), answer
assert answer.usage.completion_tokens >= 1, answer
print("openai busy: OK")
