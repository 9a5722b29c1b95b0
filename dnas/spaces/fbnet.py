"""FBNet's layer-wise space (Wu et al., "FBNet: Hardware-Aware Efficient ConvNet Design via
Differentiable Neural Architecture Search", CVPR 2019, Sec. 3.2, Tables 1-2; the authors'
builder: facebookresearch/maskrcnn-benchmark `fbnet_builder.py`, architectures:
facebookresearch/mobile-vision `fbnet_modeldef_cls_fbnet.py`).

Stem 3x3 conv stride 2 (16) + BN + ReLU; 22 searchable layers in stages of 1, 4, 4, 4, 4, 4, 1
of widths 16, 24, 32, 64, 112, 184, 352, first strides 1, 2, 2, 2, 1, 2, 1; a 1x1 conv to 1504
+ BN + ReLU, pooling, classifier. Every layer chooses among 9 candidates: the inverted residual
`kK_eE` (kernel 3 or 5, expansion 1, 3 or 6; ReLU; the 1x1 expansion conv is kept at expansion
1, as the authors' `IRFBlock` does), `kK_e1_g2` (both 1x1 convolutions in 2 groups, channels
shuffled after the first) and `skip`. `skip` is allowed in every layer (Table 2; the authors'
`Identity`): where the layer keeps its shape it is the identity (the layer is skipped: the same
as ProxylessNAS' `zero`), where the stride or width changes a 1x1 conv (with the stride) + BN +
ReLU. `C` is the stem width (paper: 16).

Published networks (`KNOWN`) from mobile-vision's `fbnet_a`, `fbnet_b`, `fbnet_c` (FBNet-B and -C
have a 1984-wide head, in their genotypes' `widths`; those configs add conv biases, left out
here as in the paper and in maskrcnn-benchmark).
"""

from __future__ import annotations

from dnas import ops
from dnas.genotype import Genotype
from dnas.spaces import chain

OPS = ("k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6", "skip")


def make_op(
    op, C_in, C_out, stride, shortcut, affine=True, track_running_stats=True, impl="depthwise", **kw
):
    """The inverted residual `kK_eE[_g2]`; `skip`: None (the identity) where the layer has a
    shortcut, else a 1x1 conv + BN + ReLU (the authors' `Identity`)."""
    if op == "skip":
        if shortcut:
            return None
        return ops.ConvBNAct(
            C_out,
            1,
            stride,
            "relu",
            affine=affine,
            track_running_stats=track_running_stats,
            **kw,
        )
    return chain.mbconv(
        op, C_in, C_out, stride, always_expand=True, activation="relu", affine=affine,
        track_running_stats=track_running_stats, impl=impl, **kw,
    )  # fmt: skip


SPEC = chain.ChainSpec(
    name="fbnet",
    ops=OPS,
    stages=chain.stages(
        (16, 24, 32, 64, 112, 184, 352), (1, 4, 4, 4, 4, 4, 1), (1, 2, 2, 2, 1, 2, 1)
    ),
    widths=(16, 16, 24, 32, 64, 112, 184, 352, 1504),
    make_op=make_op,
    activation="relu",
)

KNOWN: dict[str, Genotype] = {}
SPACE = chain.chain_space(SPEC, known=KNOWN)


def _net(*stages: str, head: int = 1504) -> Genotype:
    return SPACE.genotype(blocks=" ".join(stages).split(), widths=(*SPEC.widths[:-1], head))


KNOWN |= {
    # mobile-vision fbnet_a; the paper: 4.3M params, 249M multiply-adds.
    "fbnet_a": _net(
        "skip",
        "k3_e3 k3_e1 skip skip",
        "k5_e6 k3_e3 k5_e1 k3_e3",
        "k5_e6 k5_e3 k5_e1_g2 k5_e6",
        "k3_e6 k5_e1_g2 k5_e3 k3_e1_g2",
        "k5_e6 k5_e6 k5_e3 k5_e6",
        "k5_e6",
    ),
    # mobile-vision fbnet_b (head 1984); the paper: 4.5M params, 295M multiply-adds.
    "fbnet_b": _net(
        "k3_e1",
        "k3_e6 k5_e1 k3_e1 k3_e1",
        "k5_e6 k5_e3 k3_e6 k5_e6",
        "k5_e6 k5_e6 skip k5_e3",
        "k5_e6 k3_e1 k5_e1 k5_e3",
        "k5_e6 k5_e1 k5_e6 k5_e6",
        "k3_e6",
        head=1984,
    ),
    # mobile-vision fbnet_c (head 1984); the paper: 5.5M params, 375M multiply-adds.
    "fbnet_c": _net(
        "k3_e1",
        "k3_e6 skip k3_e1 k3_e1",
        "k5_e6 k5_e3 k5_e6 k3_e6",
        "k5_e6 k5_e3 k5_e6 k5_e6",
        "k5_e6 k5_e6 k5_e6 k5_e3",
        "k5_e6 k5_e6 k5_e6 k5_e6",
        "k3_e6",
        head=1984,
    ),
}
