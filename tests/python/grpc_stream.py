"""ModelStreamInfer (Triton's decoupled streaming) with tritonclient.grpc's
start_stream / async_stream_infer.

Usage: python3 grpc_stream.py GRPC_HOST:PORT

The server serves gpt2 and linear. Checks that gpt2 streams its greedy text
one response per chunk, and that the chunks joined equal the text of the
same request over ModelInfer; that Triton's empty final response (with
triton_final_response=true) ends each request when the client asks for it;
that linear answers one response per request, equal to ModelInfer's; and
that a failed request reports its error in the stream while the others on
it are served. Exits non-zero with a message on the first mismatch.
"""
import queue
import sys

import numpy as np
import tritonclient.grpc as grpcclient

PROMPT = "The quick brown fox"
GREEDY = {"max_tokens": 12, "temperature": 0.0}


def text_input(prompt):
    inp = grpcclient.InferInput("text", [1], "BYTES")
    inp.set_data_from_numpy(np.array([prompt.encode()], dtype=np.object_))
    return inp


def linear_input():
    inp = grpcclient.InferInput("x", [3, 1], "FP32")
    inp.set_data_from_numpy(np.array([[1.0], [2.0], [3.0]], dtype=np.float32))
    return inp


def is_final(result):
    params = result.get_response().parameters
    return "triton_final_response" in params and params["triton_final_response"].bool_param


def main():
    url = sys.argv[1]
    client = grpcclient.InferenceServerClient(url)
    whole = client.infer("gpt2", [text_input(PROMPT)], parameters=GREEDY)
    expected = whole.as_numpy("text")[0].decode()
    assert expected, "gpt2 generated no text over ModelInfer"
    linear_whole = client.infer("linear", [linear_input()]).as_numpy("y")

    responses = queue.Queue()
    client.start_stream(callback=lambda result, error: responses.put((result, error)))
    client.async_stream_infer("gpt2", [text_input(PROMPT)], request_id="gen",
                              parameters=GREEDY, enable_empty_final_response=True)
    client.async_stream_infer("linear", [linear_input()], request_id="lin",
                              enable_empty_final_response=True)
    client.async_stream_infer("nowhere", [linear_input()], request_id="bad")
    client.async_stream_infer("linear", [linear_input()], request_id="plain")

    chunks, finished, errors, plain = [], set(), [], []
    while not ({"gen", "lin"} <= finished and errors and plain):
        result, error = responses.get(timeout=120)
        if error is not None:
            errors.append(str(error))
            continue
        response = result.get_response()
        if response.id == "plain":
            assert not response.parameters, f"no end marker was asked for: {response}"
            plain.append(result)
            continue
        assert response.id not in finished, f"a response after the final one: {response}"
        if response.id == "lin":
            assert is_final(result), f"linear's one response is its last: {response}"
            np.testing.assert_array_equal(result.as_numpy("y"), linear_whole)
            finished.add("lin")
            continue
        assert response.id == "gen", response
        if is_final(result):
            assert not response.outputs, f"the final response is empty: {response}"
            finished.add("gen")
            continue
        assert [o.name for o in response.outputs] == ["text"], response
        chunks.append(result.as_numpy("text")[0].decode())
    client.stop_stream()

    assert len(chunks) > 1, f"gpt2 answered in {len(chunks)} response(s), not one per chunk"
    streamed = "".join(chunks)
    assert streamed == expected, f"streamed {streamed!r} != ModelInfer's {expected!r}"
    assert len(errors) == 1 and "nowhere" in errors[0], errors
    assert len(plain) == 1, plain
    np.testing.assert_array_equal(plain[0].as_numpy("y"), linear_whole)
    print(f"{len(chunks)} chunks: {chunks!r}")
    print(f"error in the stream: {errors[0]}")
    print("tritonclient.grpc streaming: OK")


if __name__ == "__main__":
    main()
