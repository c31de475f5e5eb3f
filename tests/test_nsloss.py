"""NsLoss: the batched loss against a naive per-neuron loop over the paper's eqs. (4)-(7)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from xairobust.errors import ConfigError
from xairobust.training.base import TrainContext
from xairobust.training.nsloss import NsLoss, NsLossParams, select_layers, sphere_perturbations


class Tiny(nn.Module):
    """conv -> BN -> ReLU -> linear -> tanh -> linear (logits)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 2)
        self.bn = nn.BatchNorm2d(2)
        self.fc1 = nn.Linear(2 * 2 * 2, 3)
        self.fc2 = nn.Linear(3, 3)

    def forward(self, x):
        h = torch.relu(self.bn(self.conv(x))).flatten(1)
        return self.fc2(torch.tanh(self.fc1(h)))


def _model() -> Tiny:
    torch.manual_seed(0)
    m = Tiny().double()
    with torch.no_grad():  # non-trivial running statistics for eval mode
        m.bn.running_mean.copy_(torch.tensor([0.1, -0.2]))
        m.bn.running_var.copy_(torch.tensor([0.5, 2.0]))
    return m


def _x(n: int = 4) -> torch.Tensor:
    return torch.rand(n, 1, 3, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def _activation(model: nn.Module, layer: str, inp: torch.Tensor) -> torch.Tensor:
    """Output of ``layer`` for a single input (its own forward pass)."""
    got = {}
    h = dict(model.named_modules())[layer].register_forward_hook(lambda m, i, o: got.setdefault("a", o))
    with torch.no_grad():
        model(inp.unsqueeze(0))
    h.remove()
    return got["a"][0]


def _naive(model, x, deltas, eps, layers, granularity="element") -> float:
    """Eqs. (4)-(7) literally: one neuron, one sample, one perturbation at a time."""
    n, batch = deltas.shape[0], x.shape[0]
    total = 0.0
    for layer in layers:
        clean = [_activation(model, layer, x[m]) for m in range(batch)]
        pert = [[_activation(model, layer, x[m] + deltas[k, m]) for m in range(batch)] for k in range(n)]
        if granularity == "channel" and clean[0].dim() > 1:
            neuron = lambda a, j: float(a[j].mean())  # noqa: E731
            count = clean[0].shape[0]
        else:
            neuron = lambda a, j: float(a.flatten()[j])  # noqa: E731
            count = clean[0].numel()
        for j in range(count):
            ma = sum(abs(neuron(clean[m], j)) for m in range(batch)) / batch  # (4)
            md = sum(abs(neuron(clean[m], j) - neuron(pert[k][m], j)) for k in range(n) for m in range(batch)) / (n * batch)  # (5)
            ns = md / (eps * count * ma)  # (6)
            total += ns * ma  # (7)
    return total


@pytest.mark.parametrize("granularity", ["element", "channel"])
def test_batched_loss_equals_naive_loop_in_eval_mode(granularity):
    model, x = _model().eval(), _x()
    params = NsLossParams(lam=1.0, eps_ns=0.3, perturbations=3, granularity=granularity)
    method = NsLoss(params)
    layers = select_layers(model, [])
    assert layers == ["conv", "fc1", "fc2"]
    _, ns, logs = method.regulariser(model, x, torch.Generator().manual_seed(7))
    deltas = sphere_perturbations(x, 3, 0.3, torch.Generator().manual_seed(7))
    assert float(ns.detach()) == pytest.approx(_naive(model, x, deltas, 0.3, layers, granularity), abs=1e-6, rel=1e-9)


def test_perturbations_lie_on_the_sphere_and_are_isotropic():
    x = torch.zeros(500, 1, 3, 3, dtype=torch.float64)
    d = sphere_perturbations(x, 4, 0.25, torch.Generator().manual_seed(0))
    assert d.shape == (4, 500, 1, 3, 3)
    assert torch.allclose(d.flatten(2).norm(dim=2), torch.full((4, 500), 0.25, dtype=torch.float64))
    u = d.flatten(2).flatten(0, 1) / 0.25
    assert float(u.mean(0).abs().max()) < 4 * math.sqrt(1 / 9 / 2000)  # per-coordinate variance 1/d


def test_train_mode_batchnorm_uses_clean_rows_only():
    model, x = _model().train(), _x(6)
    reference = copy.deepcopy(model)
    params = NsLossParams(lam=1.0, eps_ns=0.5, perturbations=2)
    out, ns, _ = NsLoss(params).regulariser(model, x, torch.Generator().manual_seed(3))
    # 1) The clean rows are what a standard train-mode forward on x alone gives, and the BN
    #    running statistics moved exactly as they would have.
    expected = reference(x)
    assert torch.allclose(out, expected, atol=1e-12)
    assert torch.allclose(model.bn.running_mean, reference.bn.running_mean, atol=1e-12)
    assert torch.allclose(model.bn.running_var, reference.bn.running_var, atol=1e-12)
    assert int(model.bn.num_batches_tracked) == int(reference.bn.num_batches_tracked) == 1
    # 2) Perturbed rows are normalised with the clean rows' statistics: an eval-mode model whose
    #    running statistics are set to those (biased) batch statistics gives the same NsLoss.
    frozen = copy.deepcopy(_model()).eval()
    with torch.no_grad():
        z = frozen.conv(x)
        frozen.bn.running_mean.copy_(z.mean(dim=(0, 2, 3)))
        frozen.bn.running_var.copy_(z.var(dim=(0, 2, 3), unbiased=False))
    _, ns_frozen, _ = NsLoss(params).regulariser(frozen, x, torch.Generator().manual_seed(3))
    assert float(ns) == pytest.approx(float(ns_frozen), rel=1e-10)
    # 3) The patched BN forward is removed afterwards.
    assert "forward" not in vars(model.bn)


def test_loss_is_clean_task_loss_plus_lambda_nsloss_and_differentiable():
    model, x = _model().eval(), _x()
    y = torch.tensor([0, 1, 2, 0])
    ctx = TrainContext(task="classification", criterion=nn.functional.cross_entropy, num_outputs=3,
                       value_range=(0.0, 1.0), generator=torch.Generator().manual_seed(5), device=torch.device("cpu"))
    method = NsLoss(NsLossParams(lam=2.5, eps_ns=0.3, perturbations=2))
    method.prepare(model, ctx)
    loss, logs = method.loss(model, x, y, ctx)
    _, ns, _ = NsLoss(NsLossParams(lam=2.5, eps_ns=0.3, perturbations=2)).regulariser(model, x, torch.Generator().manual_seed(5))
    with torch.no_grad():
        ce = nn.functional.cross_entropy(model(x), y)
    assert float(loss.detach()) == pytest.approx(float(ce) + 2.5 * float(ns), rel=1e-10)
    assert logs["task_loss"] == pytest.approx(float(ce), rel=1e-10)
    loss.backward()
    assert float(model.conv.weight.grad.abs().sum()) > 0


def test_dead_units_do_not_produce_nan():
    model, x = _model().eval(), _x()
    with torch.no_grad():
        model.fc1.weight.zero_()
        model.fc1.bias.zero_()  # fc1 outputs are exactly 0: MA = 0
    _, ns, logs = NsLoss(NsLossParams(eps_ns=0.3, perturbations=2)).regulariser(model, x, torch.Generator().manual_seed(0))
    assert math.isfinite(float(ns)) and math.isfinite(logs["mean_ns"])


def test_layer_patterns():
    model = _model()
    assert select_layers(model, ["fc*"]) == ["fc1", "fc2"]
    assert select_layers(model, ["bn", "conv"]) == ["bn", "conv"]
    with pytest.raises(ConfigError, match="--layers pattern 'fc9'"):
        select_layers(model, ["fc1", "fc9"])


def test_describe_records_the_resolved_layers():
    model = _model()
    method = NsLoss(NsLossParams(layers=["fc*"], granularity="channel"))
    ctx = TrainContext(task="classification", criterion=nn.functional.cross_entropy, num_outputs=3,
                       value_range=(0.0, 1.0), generator=torch.Generator(), device=torch.device("cpu"))
    method.prepare(model, ctx)
    d = method.describe()
    assert d["layers_resolved"] == ["fc1", "fc2"] and "clean rows" in d["batchnorm"]


@pytest.mark.parametrize("bad,match", [({"lam": -1}, "--lam"), ({"eps_ns": 0}, "--eps-ns"), ({"perturbations": 0}, "--perturbations")])
def test_bad_params_name_the_option(bad, match):
    with pytest.raises(ConfigError, match=match):
        NsLossParams(**bad)


def test_reused_or_unused_modules_are_refused():
    class Reuse(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(9, 9)
            self.act = nn.ReLU()
            self.spare = nn.Linear(9, 9)

        def forward(self, x):
            return self.act(self.fc(self.act(x.flatten(1))))

    model, x = Reuse().double(), _x()
    with pytest.raises(ConfigError, match="'act' runs more than once"):
        NsLoss(NsLossParams(layers=["act"])).regulariser(model, x, None)
    with pytest.raises(ConfigError, match="spare.*never ran"):
        NsLoss(NsLossParams(layers=["spare"])).regulariser(model, x, None)


def test_run_json_records_the_resolved_layers(tmp_path):
    import json

    from xairobust.stages.train import TrainConfig, train

    conf = TrainConfig(epochs=1, seed=0, method="nsloss",
                       method_params={"lam": 0.5, "eps_ns": 0.5, "perturbations": 2, "layers": ["net.head.*"]})
    run = train(conf, tmp_path / "ns", quiet=True)
    method = json.loads((run / "run.json").read_text())["method"]
    assert method["name"] == "nsloss" and method["params"]["perturbations"] == 2
    assert method["layers_resolved"] == ["net.head.0", "net.head.1", "net.head.2", "net.head.3"]
    assert "clean rows" in method["batchnorm"]
