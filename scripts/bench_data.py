#!/usr/bin/env python
"""Is the data path the bottleneck? Images/s of batch assembly + augmentation vs the model's
forward+backward on the same batches.

    python scripts/bench_data.py --dataset cifar10 --data-dir /tmp/c --model cifar_cnn --threads 2
    python scripts/bench_data.py --dataset imagenette --data-dir ../shared/data --model preresnet10 \
        --dataset-kwargs image_size=160

The data path is what the train loop does per step: gather a random batch of the in-memory
uint8 tensor, scale to [0, 1], augment on the batch's device. The model path is one SGD step
(forward, cross-entropy, backward, update) in fp32, or bf16 autocast with --bf16 on a GPU.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from xairobust.data.base import get_source, resolve_data_dir
from xairobust.models.base import create_model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def parse_kwargs(items: list[str]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in items)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="cifar10")
    ap.add_argument("--dataset-kwargs", nargs="*", default=[], help="key=value options of the dataset")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--model", default="cifar_cnn")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--batches", type=int, default=10, help="timed batches (after 2 warm-up batches)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--channels-last", action="store_true")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    source = get_source(args.dataset)
    kwargs = parse_kwargs(args.dataset_kwargs)
    t0 = time.perf_counter()
    split = source.load("train", resolve_data_dir(args.data_dir), **kwargs)
    load_s = time.perf_counter() - t0
    if device.type == "cuda":  # what the train stage does: the uint8 split lives on the GPU
        split.x, split.y = split.x.to(device), split.y.to(device)
    info = split.info
    model = create_model(args.model, num_outputs=info.num_outputs, in_channels=info.input_shape[0],
                         mean=info.mean, std=info.std).to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    n = args.batch_size

    def data_step() -> torch.Tensor:
        idx = torch.randint(0, len(split), (n,), generator=gen).to(split.x.device)
        x = split.inputs(idx, device)
        if split.augment is not None:
            x = split.augment(x, gen)
        if args.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    batches = [data_step() for _ in range(2)]
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(args.batches):
        batches.append(data_step())
    _sync(device)
    data_s = time.perf_counter() - t0

    y = torch.randint(0, info.num_outputs, (n,), generator=gen).to(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)

    def model_step(x: torch.Tensor) -> None:
        with autocast:
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for x in batches[:2]:
        model_step(x)
    _sync(device)
    t0 = time.perf_counter()
    for x in batches[2:]:
        model_step(x)
    _sync(device)
    model_s = time.perf_counter() - t0

    images = n * args.batches
    result = {
        "dataset": args.dataset,
        "dataset_kwargs": kwargs,
        "model": args.model,
        "device": str(device),
        "threads": args.threads,
        "batch_size": n,
        "load_train_split_s": round(load_s, 2),
        "data_images_per_s": round(images / data_s, 1),
        "model_fwd_bwd_images_per_s": round(images / model_s, 1),
        "data_share_of_step": round(data_s / (data_s + model_s), 4),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
