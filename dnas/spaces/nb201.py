"""The NAS-Bench-201 cell space (Dong & Yang, "NAS-Bench-201", ICLR 2020, Sec. 2.1): 4 nodes,
6 edges, 5 primitives, one cell type; every edge keeps its best op and the cell output is the last
node."""

from dnas.spaces.base import SearchSpace

PRIMITIVES = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")

NB201 = SearchSpace(
    name="nb201",
    primitives=PRIMITIVES,
    num_inputs=1,
    num_intermediate=3,
    cell_types=("normal",),
    edges_per_node=None,
    concat=(3,),
)
