"""ProxylessNAS' MobileNetV2 space (Cai, Zhu & Han, "ProxylessNAS: Direct Neural Architecture
Search on Target Task and Hardware", ICLR 2019, Sec. 4; mit-han-lab/proxylessnas
`search/models/super_nets/super_proxyless.py`).

Stem 3x3 conv stride 2 (32) + BN + ReLU6; a fixed 3x3 MBConv with expansion 1 (16); 21 searchable
blocks in stages of 4, 4, 4, 4, 4, 1 blocks of widths 24, 40, 80, 96, 192, 320, first strides
2, 2, 2, 1, 2, 1; a 1x1 conv to 1280 + BN + ReLU6 (the "feature mix layer"), pooling,
classifier. Every block chooses an MBConv (ReLU6, BN eps 1e-3) of kernel 3, 5 or 7 and
expansion 3 or 6, or `zero` where the block has an identity shortcut (not the first block of a
stage): the block is skipped. The last stage's single block (192 -> 320) is searched too, among
the six MBConvs. The `chain` module holds the machinery; `C` is the stem width (paper: 32).

Published networks (`KNOWN`) from the authors' released net configs (han-cai/files
`proxylessnas/proxyless_{gpu,cpu,mobile}.config`); their widths are not the search space's
(GPU: 1.35x; CPU: per-stage widths; mobile: 32 in the first stage) and ride in the genotype's
`widths`.
"""

from __future__ import annotations

from dnas.genotype import Genotype
from dnas.spaces import chain

OPS = ("mb3_e3", "mb3_e6", "mb5_e3", "mb5_e6", "mb7_e3", "mb7_e6", "zero")


def make_op(
    op, C_in, C_out, stride, shortcut, affine=True, track_running_stats=True, impl="depthwise", **kw
):
    """An MBConv `mbK_eE`, or None for `zero` (computes nothing: the block is its shortcut)."""
    del shortcut
    if op == "zero":
        return None
    return chain.mbconv(
        op, C_in, C_out, stride, activation="relu6", epsilon=1e-3, affine=affine,
        track_running_stats=track_running_stats, impl=impl, **kw,
    )  # fmt: skip


SPEC = chain.ChainSpec(
    name="proxyless",
    ops=OPS,
    stages=chain.stages((24, 40, 80, 96, 192, 320), (4, 4, 4, 4, 4, 1), (2, 2, 2, 1, 2, 1)),
    widths=(32, 16, 24, 40, 80, 96, 192, 320, 1280),
    make_op=make_op,
    activation="relu6",
    epsilon=1e-3,
    first_block=(3, 1),
    shortcut_only=("zero",),
)

KNOWN: dict[str, Genotype] = {}
SPACE = chain.chain_space(SPEC, known=KNOWN)


def _net(widths: tuple[int, ...], *stages: str) -> Genotype:
    return SPACE.genotype(blocks=" ".join(stages).split(), widths=widths)


KNOWN |= {
    # proxyless_gpu.config: 7.12M params, 465.3M multiply-adds (the authors' logs).
    "proxyless_gpu": _net(
        (40, 24, 32, 56, 112, 128, 256, 432, 1728),
        "mb5_e3 zero zero zero",
        "mb7_e3 zero zero mb3_e3",
        "mb7_e6 zero zero mb5_e3",
        "mb5_e6 zero mb3_e3 mb5_e3",
        "mb7_e6 mb7_e6 mb7_e6 mb5_e6",
        "mb7_e6",
    ),
    # proxyless_cpu.config: 4.36M params, 439.2M multiply-adds.
    "proxyless_cpu": _net(
        (40, 24, 32, 48, 88, 104, 216, 360, 1432),
        "mb3_e6 mb3_e3 mb3_e3 mb3_e3",
        "mb3_e6 mb3_e3 mb3_e3 mb5_e3",
        "mb3_e6 zero zero mb3_e3",
        "mb5_e6 mb3_e3 mb3_e3 mb3_e3",
        "mb5_e6 mb5_e3 mb5_e3 mb3_e3",
        "mb5_e6",
    ),
    # proxyless_mobile.config: 4.08M params, 320.4M multiply-adds.
    "proxyless_mobile": _net(
        (32, 16, 32, 40, 80, 96, 192, 320, 1280),
        "mb5_e3 mb3_e3 zero zero",
        "mb7_e3 mb3_e3 mb5_e3 mb5_e3",
        "mb7_e6 mb5_e3 mb5_e3 mb5_e3",
        "mb5_e6 mb5_e3 mb5_e3 mb5_e3",
        "mb7_e6 mb7_e6 mb7_e3 mb7_e3",
        "mb7_e6",
    ),
}
