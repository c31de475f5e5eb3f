"""Measured on this machine (2 shared CPU cores): import a full-size RobustBench-layout WRN-28-10
checkpoint (random weights, 146 MB, {'state_dict': module.*}) and a torchvision ResNet-50 file,
with timings; the WRN with --verify 500 on real CIFAR-10. Writes measure.json next to this file.

    PYTHONPATH=. python results/import/measure.py /tmp/import_measure /work/data
"""

import json
import subprocess
import sys
import time
from pathlib import Path

import torch
import torchvision

torch.set_num_threads(1)
work, data = Path(sys.argv[1]), sys.argv[2]
work.mkdir(parents=True, exist_ok=True)
out: dict = {}

from xairobust.models.base import create_model  # noqa: E402

torch.manual_seed(0)
wrn = create_model("wrn28_10").net
ck = work / "Standard.pt"
torch.save({"state_dict": {f"module.{k}": v for k, v in wrn.state_dict().items()}}, ck)
tv = torchvision.models.resnet50(weights=None)
ck2 = work / "resnet50-random.pth"
torch.save(tv.state_dict(), ck2)


def timed(args):
    t0 = time.perf_counter()
    p = subprocess.run(["xairobust", "import", *args, "--quiet", "--force"], capture_output=True, text=True)
    return time.perf_counter() - t0, p.returncode, (p.stdout + p.stderr).strip()


out["wrn28_10"] = dict(zip(("wall_s", "rc", "output"), timed(
    [str(ck), "--model", "wrn28_10", "--dataset", "cifar10", "--preset", "identity", "--verify", "500",
     "--data-dir", data, "--device", "cpu", "--out", str(work / "rb_standard")]), strict=True))
meta = json.loads((work / "rb_standard" / "run.json").read_text())
out["wrn28_10"].update(size_bytes=meta["source"]["size_bytes"], format=meta["source"]["format"],
                       clean_accuracy=meta["clean_accuracy"], rules=meta["mapping"]["rules"])
out["resnet50_in1k_head"] = dict(zip(("wall_s", "rc", "output"), timed(
    [str(ck2), "--model", "timm:resnet50", "--dataset", "imagenette", "--format", "torchvision", "--preset",
     "imagenet", "--num-outputs", "1000", "--out", str(work / "r50")]), strict=True))
out["wrong_head_message"] = timed(
    [str(ck2), "--model", "timm:resnet50", "--dataset", "imagenette", "--preset", "imagenet", "--out", str(work / "r50b")])[2]
Path(__file__).with_name("measure.json").write_text(json.dumps(out, indent=2) + "\n")
print(json.dumps(out, indent=2))
