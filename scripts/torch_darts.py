"""An independent PyTorch implementation of DARTS, for timing PyTorch side by side with dnas.

Used only by the benchmark scripts; dnas itself never imports it. It follows the DARTS paper
(Liu et al., ICLR 2019) and the semantics of its reference code: the search supernet
(`SearchNetwork`), the evaluation network built from a genotype (`NetworkCIFAR`, with `DARTS_V2`),
and zero-argument step functions on fixed random data that do what one dnas step does:

- `make_search_step(C, layers, batch, size, order)`: one bilevel search step, an alpha step (Adam)
  on a validation batch (first order, exact second order by double backward through the unrolled
  step, or the paper's finite-difference second order), then a weight step (SGD, gradient-norm
  clipping) on a training batch.
- `make_train_step(batch, size)`: one training step of NetworkCIFAR(DARTS_V2), auxiliary head and
  drop-path included.

PyTorch, CPU, float32, NCHW. The module sets no thread count; the caller does
(`torch.set_num_threads`). Differences from dnas (which are irrelevant to timing): BatchNorms keep
running statistics as in the reference (dnas' supernet keeps none) and the `none` op is computed
and multiplied by its weight (dnas skips it). The finite-difference virtual step does not clip the
gradient (the reference's `_compute_unrolled_model`), as dnas' does unless `search.fd_clip`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

PRIMITIVES = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)

# DARTS (second order) found on CIFAR-10, as in the paper: (op, input node) pairs, two per node.
DARTS_V2 = {
    "normal": [
        ("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2),
    ],
    "normal_concat": [2, 3, 4, 5],
    "reduce": [
        ("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
        ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1),
    ],
    "reduce_concat": [2, 3, 4, 5],
}  # fmt: skip

NUM_EDGES = 14  # 4 intermediate nodes, node j reads the 2 inputs and the j earlier nodes


# ---------------------------------------------------------------------------------------------
# Operations.


def _bn(C: int, affine: bool) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(C, affine=affine)


class ReLUConvBN(nn.Module):
    def __init__(self, C_in, C_out, kernel_size, stride, padding, affine=True):
        super().__init__()
        self.conv = nn.Conv2d(C_in, C_out, kernel_size, stride, padding, bias=False)
        self.bn = _bn(C_out, affine)

    def forward(self, x):
        return self.bn(self.conv(F.relu(x)))


class DilConv(nn.Module):
    """ReLU, depthwise k x k (dilated), pointwise 1 x 1, BN."""

    def __init__(self, C_in, C_out, kernel_size, stride, padding, dilation, affine=True):
        super().__init__()
        self.depthwise = nn.Conv2d(
            C_in, C_in, kernel_size, stride, padding, dilation, groups=C_in, bias=False
        )
        self.pointwise = nn.Conv2d(C_in, C_out, 1, bias=False)
        self.bn = _bn(C_out, affine)

    def forward(self, x):
        return self.bn(self.pointwise(self.depthwise(F.relu(x))))


class SepConv(nn.Module):
    """Two stacked (ReLU, depthwise k x k, pointwise 1 x 1, BN) blocks; the first has the stride."""

    def __init__(self, C_in, C_out, kernel_size, stride, padding, affine=True):
        super().__init__()
        self.block1 = DilConv(C_in, C_in, kernel_size, stride, padding, 1, affine)
        self.block2 = DilConv(C_in, C_out, kernel_size, 1, padding, 1, affine)

    def forward(self, x):
        return self.block2(self.block1(x))


class Identity(nn.Module):
    def forward(self, x):
        return x


class Zero(nn.Module):
    def __init__(self, stride):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


class FactorizedReduce(nn.Module):
    """ReLU, two 1x1 stride-2 convolutions on x and on x shifted by one pixel, concat, BN."""

    def __init__(self, C_in, C_out, affine=True):
        super().__init__()
        if C_out % 2:
            raise ValueError(f"FactorizedReduce needs an even C_out, got {C_out}")
        self.conv_1 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.bn = _bn(C_out, affine)

    def forward(self, x):
        x = F.relu(x)
        shifted = x[:, :, 1:, 1:]
        if x.shape[2] % 2 or x.shape[3] % 2:  # odd sizes: pad back so the two halves line up
            shifted = F.pad(shifted, (0, x.shape[3] % 2, 0, x.shape[2] % 2))
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))


def make_op(name: str, C: int, stride: int, affine: bool) -> nn.Module:
    """Primitive `name` on C channels (C in = C out)."""
    if name == "none":
        return Zero(stride)
    if name == "max_pool_3x3":
        return nn.MaxPool2d(3, stride=stride, padding=1)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
    if name == "skip_connect":
        return Identity() if stride == 1 else FactorizedReduce(C, C, affine)
    if name in ("sep_conv_3x3", "sep_conv_5x5"):
        k = int(name[-1])
        return SepConv(C, C, k, stride, k // 2, affine)
    if name in ("dil_conv_3x3", "dil_conv_5x5"):
        k = int(name[-1])
        return DilConv(C, C, k, stride, k - 1, 2, affine)
    raise KeyError(f"unknown operation {name!r}; valid: {', '.join(PRIMITIVES)}")


def _preprocess0(C_prev_prev: int, C: int, reduction_prev: bool, affine: bool) -> nn.Module:
    if reduction_prev:
        return FactorizedReduce(C_prev_prev, C, affine)
    return ReLUConvBN(C_prev_prev, C, 1, 1, 0, affine)


def _stem(C_in: int, C_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(C_in, C_out, 3, padding=1, bias=False), nn.BatchNorm2d(C_out))


def _reduction_layers(layers: int) -> tuple[int, int]:
    return layers // 3, 2 * layers // 3


# ---------------------------------------------------------------------------------------------
# The search supernet.


class MixedOp(nn.Module):
    """sum_k w_k op_k(x) over the 8 primitives; pools are followed by an affine-free BN."""

    def __init__(self, C: int, stride: int):
        super().__init__()
        self.ops = nn.ModuleList()
        for name in PRIMITIVES:
            op = make_op(name, C, stride, affine=False)
            if "pool" in name:
                op = nn.Sequential(op, nn.BatchNorm2d(C, affine=False))
            self.ops.append(op)

    def forward(self, x, weights):
        return sum(w * op(x) for w, op in zip(weights, self.ops, strict=True))


class SearchCell(nn.Module):
    def __init__(self, steps, multiplier, C_prev_prev, C_prev, C, reduction, reduction_prev):
        super().__init__()
        self.steps, self.multiplier, self.reduction = steps, multiplier, reduction
        self.preprocess0 = _preprocess0(C_prev_prev, C, reduction_prev, affine=False)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0, affine=False)
        self.edges = nn.ModuleList(
            MixedOp(C, 2 if reduction and src < 2 else 1)
            for node in range(steps)
            for src in range(2 + node)
        )

    def forward(self, s0, s1, weights):
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        offset = 0
        for _ in range(self.steps):
            s = sum(self.edges[offset + j](h, weights[offset + j]) for j, h in enumerate(states))
            offset += len(states)
            states.append(s)
        return torch.cat(states[-self.multiplier :], dim=1)


class SearchNetwork(nn.Module):
    """The DARTS search network. `forward(x, weights_normal, weights_reduce)` takes the mixing
    weights (14, 8), the softmax of the alphas, computed by the caller. The alphas live on the
    network (`arch_parameters()`) but are not among its `parameters()`."""

    def __init__(
        self, C=16, num_classes=10, layers=8, steps=4, multiplier=4, stem_multiplier=3,
        in_channels=3,
    ):  # fmt: skip
        super().__init__()
        C_curr = stem_multiplier * C
        self.stem = _stem(in_channels, C_curr)
        C_prev_prev, C_prev, C_curr = C_curr, C_curr, C
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            reduction = i in _reduction_layers(layers)
            if reduction:
                C_curr *= 2
            cell = SearchCell(
                steps, multiplier, C_prev_prev, C_prev, C_curr, reduction, reduction_prev
            )
            self.cells.append(cell)
            reduction_prev = reduction
            C_prev_prev, C_prev = C_prev, multiplier * C_curr
        self.classifier = nn.Linear(C_prev, num_classes)
        num_edges = sum(2 + node for node in range(steps))
        self.alphas_normal = (1e-3 * torch.randn(num_edges, len(PRIMITIVES))).requires_grad_()
        self.alphas_reduce = (1e-3 * torch.randn(num_edges, len(PRIMITIVES))).requires_grad_()

    def arch_parameters(self) -> list[torch.Tensor]:
        return [self.alphas_normal, self.alphas_reduce]

    def mix_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        return F.softmax(self.alphas_normal, dim=-1), F.softmax(self.alphas_reduce, dim=-1)

    def forward(self, x, weights_normal, weights_reduce):
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, weights_reduce if cell.reduction else weights_normal)
        return self.classifier(s1.mean(dim=(2, 3)))


# ---------------------------------------------------------------------------------------------
# The evaluation network.


def drop_path(x: torch.Tensor, drop_prob: float) -> torch.Tensor:
    """Zeroes whole samples with probability drop_prob, scaling the rest by 1 / (1 - drop_prob)."""
    keep = 1.0 - drop_prob
    mask = torch.empty(x.shape[0], 1, 1, 1, dtype=x.dtype).bernoulli_(keep)
    return x * mask / keep


class Cell(nn.Module):
    def __init__(self, genotype, C_prev_prev, C_prev, C, reduction, reduction_prev):
        super().__init__()
        kind = "reduce" if reduction else "normal"
        self.reduction = reduction
        self.preprocess0 = _preprocess0(C_prev_prev, C, reduction_prev, affine=True)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0, affine=True)
        names, self.indices = zip(*genotype[kind], strict=True)
        self.concat = list(genotype[f"{kind}_concat"])
        self.multiplier = len(self.concat)
        self.ops = nn.ModuleList(
            make_op(name, C, 2 if reduction and index < 2 else 1, affine=True)
            for name, index in zip(names, self.indices, strict=True)
        )

    def forward(self, s0, s1, drop_prob: float):
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for node in range(len(self.ops) // 2):
            total = 0
            for slot in (2 * node, 2 * node + 1):
                op = self.ops[slot]
                h = op(states[self.indices[slot]])
                if self.training and drop_prob > 0 and not isinstance(op, Identity):
                    h = drop_path(h, drop_prob)
                total = total + h
            states.append(total)
        return torch.cat([states[i] for i in self.concat], dim=1)


class AuxiliaryHeadCIFAR(nn.Module):
    """ReLU, 5x5 average pooling stride 3 (8x8 -> 2x2), 1x1 conv to 128, BN, ReLU, 2x2 conv to
    768, BN, ReLU, linear. As in dnas, the pooling is skipped on maps smaller than 5x5."""

    def __init__(self, C: int, num_classes: int):
        super().__init__()
        self.pool = nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False)
        self.conv1 = nn.Conv2d(C, 128, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(128)
        self.conv2 = nn.Conv2d(128, 768, 2, bias=False)
        self.bn2 = nn.BatchNorm2d(768)
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x):
        x = F.relu(x)
        if min(x.shape[2:]) >= 5:
            x = self.pool(x)
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.classifier(x.mean(dim=(2, 3)))


class NetworkCIFAR(nn.Module):
    """The DARTS evaluation network: stem of 3C channels, `layers` cells (reductions at 1/3 and
    2/3), auxiliary head after the 2/3 cell, global pooling, linear. `forward` returns
    `(logits, aux_logits)`; aux_logits is None unless training with an auxiliary head."""

    def __init__(
        self, C=36, num_classes=10, layers=20, auxiliary=True, genotype=DARTS_V2,
        drop_path_prob=0.2, stem_multiplier=3, in_channels=3,
    ):  # fmt: skip
        super().__init__()
        self.layers, self.auxiliary, self.drop_path_prob = layers, auxiliary, drop_path_prob
        C_curr = stem_multiplier * C
        self.stem = _stem(in_channels, C_curr)
        C_prev_prev, C_prev, C_curr = C_curr, C_curr, C
        self.cells = nn.ModuleList()
        reduction_prev = False
        C_aux = None
        for i in range(layers):
            reduction = i in _reduction_layers(layers)
            if reduction:
                C_curr *= 2
            cell = Cell(genotype, C_prev_prev, C_prev, C_curr, reduction, reduction_prev)
            self.cells.append(cell)
            reduction_prev = reduction
            C_prev_prev, C_prev = C_prev, cell.multiplier * C_curr
            if i == 2 * layers // 3:
                C_aux = C_prev
        if auxiliary:
            self.auxiliary_head = AuxiliaryHeadCIFAR(C_aux, num_classes)
        self.classifier = nn.Linear(C_prev, num_classes)

    def forward(self, x):
        aux_logits = None
        s0 = s1 = self.stem(x)
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == 2 * self.layers // 3 and self.auxiliary and self.training:
                aux_logits = self.auxiliary_head(s1)
        return self.classifier(s1.mean(dim=(2, 3))), aux_logits


def count_params(model: nn.Module, exclude: Sequence[str] = ("auxiliary_head",)) -> int:
    """Number of parameter scalars, leaving out submodules named in `exclude` (by default the
    auxiliary head, the papers' convention). The search network's alphas are not parameters."""
    return sum(
        p.numel()
        for name, p in model.named_parameters()
        if not set(name.split(".")).intersection(exclude)
    )


# ---------------------------------------------------------------------------------------------
# Steps on fixed random data.

ORDERS = ("first", "second", "finite_difference")


def _random_batch(generator, batch, size, in_channels, num_classes):
    x = torch.randn(batch, in_channels, size, size, generator=generator)
    y = torch.randint(0, num_classes, (batch,), generator=generator)
    return x, y


def make_search_step(
    C: int = 16, layers: int = 8, batch: int = 64, size: int = 32, order: str = "first", *,
    in_channels: int = 3, num_classes: int = 10, seed: int = 0,
    lr: float = 0.025, momentum: float = 0.9, weight_decay: float = 3e-4, grad_clip: float = 5.0,
    arch_lr: float = 3e-4, arch_weight_decay: float = 1e-3, eps: float = 0.01,
) -> Callable[[], float]:  # fmt: skip
    """One DARTS search step per call: the alpha step (Adam) on the validation batch, first order
    or finite-difference second order, then the weight step (SGD with clipping) on the training
    batch. Returns the training loss. `.model` and the optimisers are attributes of the step."""
    if order not in ORDERS:
        raise ValueError(f"unknown order {order!r}; valid: {ORDERS}")
    torch.manual_seed(seed)
    model = SearchNetwork(C, num_classes, layers, in_channels=in_channels).train()
    g = torch.Generator().manual_seed(seed + 1)
    x_train, y_train = _random_batch(g, batch, size, in_channels, num_classes)
    x_val, y_val = _random_batch(g, batch, size, in_channels, num_classes)
    alphas = model.arch_parameters()
    params = dict(model.named_parameters())
    w_opt = torch.optim.SGD(
        params.values(), lr=lr, momentum=momentum, weight_decay=weight_decay
    )  # fmt: skip
    a_opt = torch.optim.Adam(alphas, lr=arch_lr, betas=(0.5, 0.999), weight_decay=arch_weight_decay)

    def loss_at(p, x, y):
        """Cross-entropy with the network's parameters replaced by `p` (None: its own)."""
        mix = [F.softmax(a, dim=-1) for a in alphas]
        logits = model(x, *mix) if p is None else functional_call(model, p, (x, *mix))
        return F.cross_entropy(logits, y)

    def alpha_grad_first():
        return torch.autograd.grad(loss_at(None, x_val, y_val), alphas)

    def alpha_grad_finite_difference():
        names, ws = list(params), list(params.values())
        # The virtual step w' = w - xi (momentum buffer * momentum + grad + wd w), unclipped.
        grads = torch.autograd.grad(loss_at(None, x_train, y_train), ws)
        xi = w_opt.param_groups[0]["lr"]
        with torch.no_grad():
            unrolled = {}
            for name, w, gw in zip(names, ws, grads, strict=True):
                buf = w_opt.state.get(w, {}).get("momentum_buffer")
                d = gw + weight_decay * w
                if buf is not None:
                    d = d + momentum * buf
                unrolled[name] = (w - xi * d).requires_grad_()
        val_loss = loss_at(unrolled, x_val, y_val)
        *g_w, g_a0, g_a1 = torch.autograd.grad(val_loss, [*unrolled.values(), *alphas])
        # Hessian-vector product d^2 L_train / (d alpha d w) . g_w by central differences.
        with torch.no_grad():
            r = eps / torch.sqrt(sum(torch.sum(v * v) for v in g_w))
            plus = {n: w + r * v for n, w, v in zip(names, ws, g_w, strict=True)}
            minus = {n: w - r * v for n, w, v in zip(names, ws, g_w, strict=True)}
        g_plus = torch.autograd.grad(loss_at(plus, x_train, y_train), alphas)
        g_minus = torch.autograd.grad(loss_at(minus, x_train, y_train), alphas)
        return [
            g - xi * (gp - gm) / (2 * r)
            for g, gp, gm in zip((g_a0, g_a1), g_plus, g_minus, strict=True)
        ]

    def alpha_grad_second():
        """Exact: autograd through the unrolled step (double backward, `create_graph=True`)."""
        ws = list(params.values())
        grads = torch.autograd.grad(loss_at(None, x_train, y_train), ws, create_graph=True)
        xi = w_opt.param_groups[0]["lr"]
        unrolled = {}
        for name, w, gw in zip(params, ws, grads, strict=True):
            buf = w_opt.state.get(w, {}).get("momentum_buffer")
            d = gw + weight_decay * w.detach()
            if buf is not None:
                d = d + momentum * buf
            unrolled[name] = w.detach() - xi * d
        return torch.autograd.grad(loss_at(unrolled, x_val, y_val), alphas)

    alpha_grad = {
        "first": alpha_grad_first,
        "second": alpha_grad_second,
        "finite_difference": alpha_grad_finite_difference,
    }[order]

    def step() -> float:
        for a, ga in zip(alphas, alpha_grad(), strict=True):
            a.grad = ga
        a_opt.step()
        w_opt.zero_grad(set_to_none=True)
        mix = [F.softmax(a, dim=-1).detach() for a in alphas]
        loss = F.cross_entropy(model(x_train, *mix), y_train)
        loss.backward()
        nn.utils.clip_grad_norm_(params.values(), grad_clip)
        w_opt.step()
        return loss.item()

    step.model, step.weight_optimizer, step.alpha_optimizer = model, w_opt, a_opt
    return step


def make_train_step(
    batch: int = 64, size: int = 32, *, C: int = 36, layers: int = 20, in_channels: int = 3,
    num_classes: int = 10, auxiliary_weight: float = 0.4, drop_path_prob: float = 0.2,
    lr: float = 0.025, momentum: float = 0.9, weight_decay: float = 3e-4, grad_clip: float = 5.0,
    seed: int = 0,
) -> Callable[[], float]:  # fmt: skip
    """One training step of NetworkCIFAR(DARTS_V2) per call (auxiliary loss, drop-path, SGD with
    clipping) on a fixed random batch. Returns the loss; `.model` is an attribute of the step."""
    torch.manual_seed(seed)
    model = NetworkCIFAR(
        C, num_classes, layers, True, DARTS_V2, drop_path_prob, in_channels=in_channels
    ).train()
    g = torch.Generator().manual_seed(seed + 1)
    x, y = _random_batch(g, batch, size, in_channels, num_classes)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        logits, aux_logits = model(x)
        loss = F.cross_entropy(logits, y)
        if aux_logits is not None:
            loss = loss + auxiliary_weight * F.cross_entropy(aux_logits, y)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        return loss.item()

    step.model, step.optimizer = model, opt
    return step
