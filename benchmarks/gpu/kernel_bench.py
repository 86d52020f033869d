"""Issue 9's benchmark: a ResNet-like input (3x224x224) sent as FP32 NCHW vs as UINT8 NHWC normalised on
the device by kernels/preprocess.cu, on a copy-bound model (a strided conv stem, pooling, 1000 classes).

Modes, each through the engine (64 closed-loop batch-1 clients, dynamic batching up to 64 rows):
  fp32          FP32 arrays staged in pinned memory, 602,112 B per image host-to-device
  uint8_device  UINT8 staged, 150,528 B per image host-to-device, normalised by the kernel on the device
  uint8_top5    as uint8_device, and the logits reduced to top-5 on the device (60 B back instead of 4,000)
  uint8_host    UINT8 normalised on the CPU path, then FP32 over PCIe (what happens without the kernel)
and the same without the engine ("direct": one thread calling the stage/backend at batch 64), the limit.
Bytes over PCIe are counted from the arrays each mode copies, per image. Prints and writes JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from gpuserve.backends.cuda import pinned_allocator
from gpuserve.backends.torch import TorchBackend
from gpuserve.engine.batcher import BatchingConfig, Scheduler
from gpuserve.engine.instance import Instance
from gpuserve.engine.staging import StagingPool
from gpuserve.kernels.preprocess import Normalize
from gpuserve.kernels.stage import NO_KERNELS, ImageInput, KernelPlan

SHAPE = (3, 224, 224)
CLASSES = 1000
NORMALIZE = Normalize("NHWC", 1 / 255, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def export_model(path: Path) -> Path:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 7, stride=4, padding=3), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(32, CLASSES)).eval()
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(net, (torch.zeros(2, *SHAPE),), dynamic_shapes={"input": {0: batch}})
    torch.export.save(program, str(path))
    return path


class HostOnly:
    """The backend without run_on_device: the kernel stage falls back to its CPU path."""

    def __init__(self, backend):
        self._backend = backend
        self.inputs, self.outputs, self.device = backend.inputs, backend.outputs, backend.device
        self.max_concurrency = backend.max_concurrency

    def run(self, inputs, output_names=None):
        return self._backend.run(inputs, output_names)


def image(mode: str, rows: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    if mode == "fp32":
        return rng.normal(size=(rows, *SHAPE)).astype(np.float32)
    return rng.integers(0, 256, (rows, SHAPE[1], SHAPE[2], SHAPE[0]), dtype=np.uint8)


def pcie_bytes(mode: str) -> dict:
    h2d = int(np.prod(SHAPE)) * (4 if mode in ("fp32", "uint8_host") else 1)
    d2h = 5 * (4 + 8) if mode == "uint8_top5" else CLASSES * 4
    return {"h2d_bytes_per_image": h2d, "d2h_bytes_per_image": d2h}


def build(path: Path, mode: str, device: str):
    backend = TorchBackend(str(path), device=device)
    name = backend.inputs[0].name
    if mode == "fp32":
        return backend, NO_KERNELS.bind(backend), name
    if mode == "uint8_host":
        backend = HostOnly(backend)
    stage = KernelPlan(backend.inputs, backend.outputs, ImageInput(name, NORMALIZE)).bind(backend)
    if mode != "uint8_host" and not stage.on_device:
        raise SystemExit("the kernel stage cannot use the device here (CuPy missing, or no run_on_device)")
    return backend, stage, name


async def engine_rate(scheduler, name, mode, concurrency, seconds):
    x = image(mode, 1)
    reduce = {scheduler.instances[0].backend.outputs[0].name: 5} if mode == "uint8_top5" else None
    wanted = [scheduler.instances[0].backend.outputs[0].name] if reduce else None
    await scheduler.submit({name: x}, outputs=wanted, reduce=reduce)
    scheduler.batches_formed.clear()
    stop, done = time.perf_counter() + seconds, [0]

    async def client():
        while time.perf_counter() < stop:
            await scheduler.submit({name: x}, outputs=wanted, reduce=reduce)
            done[0] += 1

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    rate = done[0] / (time.perf_counter() - start)
    formed = dict(scheduler.batches_formed)
    await scheduler.stop()
    return rate, formed


def direct_rate(backend, stage, name, mode, rows, seconds):
    x = image(mode, rows)
    if torch.cuda.is_available():
        x = torch.from_numpy(x).pin_memory().numpy()  # as the staging pool would hold it
    out = backend.outputs[0].name
    reduce = {out: 5} if mode == "uint8_top5" else {}

    def once():
        if mode == "fp32":
            return backend.run({name: x})
        return stage.run({name: x}, [out], reduce, True)

    once()
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        once()
        done += rows
    return done / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--modes", default=None, help="default: fp32,uint8_device,uint8_top5,uint8_host "
                        "(on the CPU fp32,uint8_host: the others need the device)")
    parser.add_argument("--device", default="cuda:0", help="cpu: a smoke run of the fp32 and uint8_host modes")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.modes is None:
        args.modes = "fp32,uint8_device,uint8_top5,uint8_host" if args.device.startswith("cuda") else "fp32,uint8_host"
    name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu"
    report = {"date": time.strftime("%Y-%m-%d"), "device": name, "torch": torch.__version__,
              "input": list(SHAPE), "concurrency": args.concurrency, "max_batch": args.max_batch, "modes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        path = export_model(Path(tmp) / "stem.pt2")
        for mode in args.modes.split(","):
            backend, stage, name = build(path, mode, args.device)
            row = dict(pcie_bytes(mode))
            row["direct_images_s"] = round(direct_rate(backend, stage, name, mode, args.max_batch, args.seconds / 2), 1)
            pool = StagingPool(pinned_allocator()) if args.device != "cpu" else StagingPool()
            instance = Instance(backend, mode, pool, stage=stage)
            scheduler = Scheduler(mode, [instance], BatchingConfig(max_batch_size=args.max_batch))
            rate, formed = asyncio.run(engine_rate(scheduler, name, mode, args.concurrency, args.seconds))
            row["engine_images_s"] = round(rate, 1)
            row["batches"] = {str(k): v for k, v in sorted(formed.items())}
            row["h2d_MB_s_at_engine_rate"] = round(rate * row["h2d_bytes_per_image"] / 1e6, 1)
            report["modes"][mode] = row
            print(mode, json.dumps(row), flush=True)
    modes = report["modes"]
    if "fp32" in modes and "uint8_device" in modes:
        report["uint8_device_vs_fp32_engine"] = round(modes["uint8_device"]["engine_images_s"]
                                                      / modes["fp32"]["engine_images_s"], 2)
        report["uint8_device_vs_fp32_direct"] = round(modes["uint8_device"]["direct_images_s"]
                                                      / modes["fp32"]["direct_images_s"], 2)
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
