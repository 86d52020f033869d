"""Triton Inference Server (2.51, bundled by nvidia-pytriton 0.7.0) serving ONNX files through
pytriton's Python backend with onnxruntime inside: @batch, dynamic batching on, max_batch_size 64.
Runs inside .peers/triton (a venv of Debian's /usr/bin/python3.11):

    .peers/triton/bin/python benchmarks/peers/triton_server.py --model small=PATH --model mlp=PATH \
        --http-port 8000 --grpc-port 8001 --metrics-port 8002
"""

import argparse
import logging
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ort_session import session  # noqa: E402
from pytriton.decorators import batch  # noqa: E402
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor  # noqa: E402
from pytriton.triton import Triton, TritonConfig  # noqa: E402

_NP = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64,
       "tensor(int32)": np.int32}


def infer_fn(sess):
    input_name = sess.get_inputs()[0].name
    output_name = sess.get_outputs()[0].name

    @batch
    def infer(**inputs):
        return {output_name: sess.run(None, {input_name: inputs[input_name]})[0]}

    return infer


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", action="append", required=True, help="NAME=PATH.onnx")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--max-queue-delay-us", type=int, default=0)
    parser.add_argument("--cached", action="append", default=[],
                        help="NAME: this model uses the response cache (then --cache-config local,size=...)")
    parser.add_argument("--cache-bytes", type=int, default=128 * 1024 * 1024)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config = TritonConfig(http_address="127.0.0.1", http_port=args.http_port, grpc_address="127.0.0.1",
                          grpc_port=args.grpc_port, metrics_port=args.metrics_port, log_verbose=0,
                          allow_gpu_metrics=False,
                          cache_config=[f"local,size={args.cache_bytes}"] if args.cached else None)
    with Triton(config=config) as triton:
        for item in args.model:
            name, path = item.split("=", 1)
            sess = session(path)
            i, o = sess.get_inputs()[0], sess.get_outputs()[0]
            triton.bind(
                model_name=name,
                infer_func=infer_fn(sess),
                inputs=[Tensor(name=i.name, dtype=_NP[i.type], shape=tuple(i.shape[1:]))],
                outputs=[Tensor(name=o.name, dtype=_NP[o.type], shape=tuple(o.shape[1:]))],
                config=ModelConfig(max_batch_size=args.max_batch_size,
                                   batcher=DynamicBatcher(max_queue_delay_microseconds=args.max_queue_delay_us),
                                   response_cache=name in args.cached),
                strict=False,
            )
        triton.serve()


if __name__ == "__main__":
    main()
