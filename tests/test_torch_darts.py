"""The PyTorch DARTS used by the benchmarks (scripts/torch_darts.py): tiny sizes, one thread."""

import importlib.util
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

_PATH = Path(__file__).resolve().parents[1] / "scripts" / "torch_darts.py"
_spec = importlib.util.spec_from_file_location("torch_darts", _PATH)
td = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(td)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_darts_v2_cifar10_parameter_count_matches_dnas_and_the_reference():
    # dnas tests/test_network.py; quark0/darts logs "param size = 3.349342MB".
    model = td.NetworkCIFAR(36, 10, 20, auxiliary=True, genotype=td.DARTS_V2)
    assert td.count_params(model) == 3_349_342
    assert td.count_params(model, exclude=()) > 3_349_342  # the auxiliary head


def test_search_network_parameter_count_matches_dnas():
    # dnas tests/test_supernet.py: the C=16, 8-cell DARTS supernet.
    assert td.count_params(td.SearchNetwork(16, 10, 8)) == 1_930_618


@pytest.mark.parametrize("stride", [1, 2])
def test_one_hot_mixed_op_equals_the_single_op(stride):
    torch.manual_seed(0)
    mixed = td.MixedOp(4, stride).train()
    x = torch.randn(2, 4, 8, 8)
    for k, name in enumerate(td.PRIMITIVES):
        w = torch.zeros(len(td.PRIMITIVES))
        w[k] = 1.0
        with torch.no_grad():
            got, want = mixed(x, w), mixed.ops[k](x)
        assert got.shape == (2, 4, 8 // stride, 8 // stride), name
        torch.testing.assert_close(got, want, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("order", td.ORDERS)
def test_tiny_search_step_updates_alphas_and_weights(order):
    step = td.make_search_step(C=4, layers=3, batch=2, size=8, order=order)
    model = step.model
    alphas = [a.detach().clone() for a in model.arch_parameters()]
    weights = [p.detach().clone() for p in model.parameters()]
    loss = step()
    assert math.isfinite(loss) and loss > 0
    for before, after in zip(alphas, model.arch_parameters(), strict=True):
        assert not torch.equal(before, after)
    assert any(not torch.equal(b, a) for b, a in zip(weights, model.parameters(), strict=True))


def test_tiny_train_step_uses_the_auxiliary_head():
    step = td.make_train_step(batch=2, size=8, C=4, layers=3)
    head = step.model.auxiliary_head.classifier.weight.detach().clone()
    assert step() > 0
    assert not torch.equal(head, step.model.auxiliary_head.classifier.weight)
    step.model.eval()
    with torch.no_grad():
        logits, aux = step.model(torch.randn(2, 3, 8, 8))
    assert logits.shape == (2, 10) and aux is None
