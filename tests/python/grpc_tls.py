"""gRPC over TLS with tritonclient.grpc (ssl=True), the server requiring
client certificates (mutual TLS).

Usage: python3 grpc_tls.py HOST:PORT CA_PEM CLIENT_PEM CLIENT_KEY

The server serves linear with a certificate for localhost signed by CA_PEM
and accepts clients whose certificate chains to the CA that signed
CLIENT_PEM. Checks that a client trusting the CA and presenting its
certificate is served; that one without a certificate, and a plaintext
client, are refused; and that the server goes on serving. Exits non-zero
with a message on the first mismatch.
"""
import sys

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException


def linear(client):
    inp = grpcclient.InferInput("x", [1, 1], "FP32")
    inp.set_data_from_numpy(np.array([[1.0]], dtype=np.float32))
    return client.infer("linear", [inp]).as_numpy("y")


def refused(what, client):
    try:
        linear(client)
    except InferenceServerException as e:
        assert e.status() == "StatusCode.UNAVAILABLE", (what, e.status(), e.message())
        print(f"{what}: refused ({e.message()})")
        return
    raise AssertionError(f"{what} was served")


def main():
    url, ca, cert, key = sys.argv[1:5]
    trusted = grpcclient.InferenceServerClient(
        url, ssl=True, root_certificates=ca, private_key=key, certificate_chain=cert
    )
    assert trusted.is_server_live(), "not live over TLS"
    first = linear(trusted)
    refused("a client without a certificate",
            grpcclient.InferenceServerClient(url, ssl=True, root_certificates=ca))
    refused("a plaintext client", grpcclient.InferenceServerClient(url))
    np.testing.assert_array_equal(linear(trusted), first)
    print(f"linear over TLS: {first.tolist()}")
    print("tritonclient.grpc over TLS: OK")


if __name__ == "__main__":
    main()
