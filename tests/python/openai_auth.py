"""The official `openai` Python client against a server started with --api-key.

Usage: openai_auth.py HOST:PORT KEY

With the key the client sends as its api_key, it lists the models and
embeds text; with a wrong key, each call raises openai.AuthenticationError
(HTTP 401) carrying the server's reason, and the right key still works afterwards.
Prints "openai api key: OK".
"""

import sys

import openai

BASE = f"http://{sys.argv[1]}/v1"
KEY = sys.argv[2]


def embed(client):
    return client.embeddings.create(model="minilm", input="edge inference", encoding_format="float")


client = openai.OpenAI(base_url=BASE, api_key=KEY, max_retries=0)
assert [m.id for m in client.models.list()] == ["minilm"]
width = len(embed(client).data[0].embedding)
assert width == 384, width

wrong = openai.OpenAI(base_url=BASE, api_key=KEY + "-wrong", max_retries=0)
for call in (wrong.models.list, lambda: embed(wrong)):
    try:
        call()
    except openai.AuthenticationError as e:
        assert e.status_code == 401, e.status_code
        # The client hands the server's reason over as the error's body.
        assert "key is not valid" in str(e.body), e.body
    else:
        raise AssertionError("a wrong key was accepted")

assert len(embed(client).data[0].embedding) == width
print("openai api key: OK")
