"""The official `openai` Python client against edgeserve's /v1 API.

Usage: openai_compat.py HOST:PORT

Checks, with the client's own types and exceptions: the model list;
embeddings in both encodings equal to the OIP output; completions and chat,
streamed and not, where a streamed greedy completion concatenates to exactly
the non-streamed one and to the OIP answer; usage counts; and a clear 400
(BadRequestError) or 404 (NotFoundError) for each kind of bad input, after
which the server still serves. Prints "openai compatibility: OK".
"""

import base64
import json
import struct
import sys
import urllib.request

import openai

BASE = f"http://{sys.argv[1]}"
client = openai.OpenAI(base_url=f"{BASE}/v1", api_key="unused", max_retries=0)


def oip(model, texts, parameters=None):
    body = {
        "inputs": [{"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": texts}],
        "parameters": parameters or {},
    }
    request = urllib.request.Request(
        f"{BASE}/v2/models/{model}/infer",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request) as response:
        return {o["name"]: o for o in json.load(response)["outputs"]}


# Models.
ids = sorted(m.id for m in client.models.list())
assert ids == ["gpt2", "minilm"], ids

# Embeddings: float and base64 (the client's default) equal the OIP output.
sentences = ["edge inference", "a second sentence"]
reference = oip("minilm", sentences)["embedding"]
width = reference["shape"][1]
rows = [reference["data"][i * width:(i + 1) * width] for i in range(len(sentences))]
floats = client.embeddings.create(model="minilm", input=sentences, encoding_format="float")
assert [d.embedding for d in floats.data] == rows, "float embeddings differ from OIP"
assert floats.usage.prompt_tokens > 0
raw = client.embeddings.with_raw_response.create(
    model="minilm", input=sentences, encoding_format="base64"
).http_response.json()
for item, row in zip(raw["data"], rows):
    decoded = struct.unpack(f"<{width}f", base64.b64decode(item["embedding"]))
    assert list(decoded) == [struct.unpack("<f", struct.pack("<f", x))[0] for x in row]
default = client.embeddings.create(model="minilm", input="edge inference")
assert len(default.data) == 1 and len(default.data[0].embedding) == width

# Completions: streamed greedy == non-streamed == OIP.
prompt = "The quick brown fox"
whole = client.completions.create(model="gpt2", prompt=prompt, max_tokens=12, temperature=0)
text = whole.choices[0].text
answer = oip("gpt2", [prompt], {"max_tokens": 12, "return_tokens": True})
assert text == answer["text"]["data"][0]
assert whole.choices[0].finish_reason in ("length", "stop")
# Usage counts are the model's real token counts.
assert whole.usage.prompt_tokens == answer["prompt_tokens"]["shape"][1], whole.usage
assert whole.usage.completion_tokens == answer["tokens"]["shape"][1], whole.usage
pieces, finish, usage = [], None, None
for chunk in client.completions.create(
    model="gpt2", prompt=prompt, max_tokens=12, temperature=0, stream=True,
    stream_options={"include_usage": True},
):
    if chunk.usage is not None:
        usage = chunk.usage
    for choice in chunk.choices:
        pieces.append(choice.text)
        finish = choice.finish_reason or finish
assert "".join(pieces) == text, (pieces, text)
assert finish == whole.choices[0].finish_reason
assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens

# Stop sequences end the text, without the stop text.
if len(text) > 3:
    stop = text[2:4]
    stopped = client.completions.create(model="gpt2", prompt=prompt, max_tokens=12, stop=stop)
    assert stopped.choices[0].text == text[: text.index(stop)], stopped
    assert stopped.choices[0].finish_reason == "stop"

# Several prompts and samples: n choices per prompt, seeded.
many = client.completions.create(
    model="gpt2", prompt=["a", "b"], n=2, max_tokens=4, temperature=1.0, seed=7
)
assert [c.index for c in many.choices] == [0, 1, 2, 3]

# Chat, whole and streamed with deltas.
messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
chat = client.chat.completions.create(model="gpt2", messages=messages, max_tokens=8)
assert chat.choices[0].message.role == "assistant"
streamed = [
    c.choices[0].delta.content or ""
    for c in client.chat.completions.create(
        model="gpt2", messages=messages, max_tokens=8, stream=True
    )
    if c.choices
]
assert "".join(streamed) == chat.choices[0].message.content

# Bad input: a clear 400 in OpenAI's error shape, naming the problem.
def refused(call, words, kind=openai.BadRequestError):
    try:
        call()
    except kind as e:
        message = e.body["message"] if isinstance(e.body, dict) else str(e)
        assert words in message, (words, message)
        return
    raise AssertionError(f"expected {kind.__name__} mentioning {words!r}")


refused(lambda: client.completions.create(model="gpt2", prompt=""), "empty")
refused(lambda: client.chat.completions.create(model="gpt2", messages=[]), "empty")
refused(lambda: client.completions.create(model="gpt2", prompt="x", max_tokens=-1), "max_tokens")
refused(lambda: client.completions.create(model="gpt2", prompt="x", temperature=-0.5), "temperature")
refused(
    lambda: client.completions.create(model="gpt2", prompt="x", extra_body={"bogus": 1}),
    "bogus",
)
refused(lambda: client.embeddings.create(model="minilm", input=[{"a": 1}]), "input")
refused(
    lambda: client.completions.create(model="gpt2", prompt="word " * 400, max_tokens=1),
    "context",
)
refused(lambda: client.embeddings.create(model="gpt2", input="x"), "embeddings")
refused(lambda: client.completions.create(model="gpt5", prompt="x"), "gpt5", openai.NotFoundError)

# Still serving.
assert client.completions.create(model="gpt2", prompt=prompt, max_tokens=12).choices[0].text == text
print("openai compatibility: OK")
