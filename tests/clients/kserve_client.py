"""Runs under a Python that has the ``kserve`` package (it is too heavy for the test extra):

    python kserve_client.py BASE_URL MODEL VECTORS.npy

KServe's own ``InferenceRESTClient`` asks the V2 protocol for server and model readiness and
infers the vectors, JSON and binary; the V1 protocol for server liveness, model readiness and
``instances``.
Prints one JSON object with what came back, for the test to compare with the native API.
"""

import asyncio
import json
import sys

import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig


async def main(base_url: str, model: str, vectors: np.ndarray) -> dict:
    out = {}
    async with InferenceRESTClient(RESTConfig(protocol="v2", retries=1)) as v2:
        out["v2_server_live"] = await v2.is_server_live(base_url)
        out["v2_server_ready"] = await v2.is_server_ready(base_url)
        out["v2_model_ready"] = await v2.is_model_ready(base_url, model)
        for binary in (False, True):
            tensor = InferInput("input", list(vectors.shape), "FP32")
            tensor.set_data_from_numpy(vectors, binary_data=binary)
            response = await v2.infer(base_url, InferRequest(model, [tensor], request_id="kserve-1"),
                                      model_name=model)
            outputs = {o.name: o.as_numpy() for o in response.outputs}
            out[f"v2_binary_{binary}"] = {
                "id": response.id, "model_name": response.model_name,
                "model_version": response.model_version,
                "probabilities": outputs["probabilities"].tolist(),
            }
    async with InferenceRESTClient(RESTConfig(protocol="v1", retries=1)) as v1:
        out["v1_server_live"] = await v1.is_server_live(base_url)
        out["v1_model_ready"] = await v1.is_model_ready(base_url, model)
        response = await v1.infer(base_url, {"instances": vectors.tolist()}, model_name=model)
        out["v1_predictions"] = [row["probabilities"] for row in response["predictions"]]
    return out


if __name__ == "__main__":
    base, name, path = sys.argv[1:4]
    print(json.dumps(asyncio.run(main(base, name, np.load(path)))))
