"""The DARTS convolutional cell space (Liu et al., "DARTS: Differentiable Architecture Search",
ICLR 2019, Sec. 2.1 and 3.1): 2 input nodes, 4 intermediate nodes, 14 edges, 8 primitives,
normal and reduction cells; a discrete cell keeps 2 incoming edges per node and concatenates all
4 nodes."""

from dnas.spaces.base import SearchSpace

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

DARTS_CNN = SearchSpace(
    name="darts_cnn",
    primitives=PRIMITIVES,
    num_inputs=2,
    num_intermediate=4,
    cell_types=("normal", "reduce"),
    edges_per_node=2,
    concat=(2, 3, 4, 5),
)
