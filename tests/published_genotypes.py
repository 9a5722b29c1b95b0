"""Genotype strings copied verbatim from the papers' repositories (named beside each), shared by
the tests of the DARTS format (test_genotype.py) and of the literal reader (test_literals.py): an
independent source for the hand-transcribed lists in `darts_cnn.KNOWN`."""

# quark0/darts cnn/genotypes.py, the DARTS_V2 line (identical in yuhuixu1993/PC-DARTS and
# chenxin061/pdarts genotypes.py).
QUARK0_DARTS_V2 = "DARTS_V2 = Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])"  # noqa: E501

# D-X-Y/AutoDL-Projects lib/nas_infer_model/DXYs/genotypes.py: one tuple of edges per node, and two
# extra fields that the DARTS format does not have.
DXY_GDAS_V1 = """
GDAS_V1 = Genotype(
  normal=[
    (('skip_connect', 0), ('skip_connect', 1)),
    (('skip_connect', 0), ('sep_conv_5x5', 2)),
    (('sep_conv_3x3', 3), ('skip_connect', 0)),
    (('sep_conv_5x5', 4), ('sep_conv_3x3', 3))],
  normal_concat=[2, 3, 4, 5],
  reduce=[
    (('sep_conv_5x5', 0), ('sep_conv_3x3', 1)), 
    (('sep_conv_5x5', 2), ('sep_conv_5x5', 1)),
    (('dil_conv_5x5', 2), ('sep_conv_3x3', 1)),
    (('sep_conv_5x5', 0), ('sep_conv_5x5', 1))],
  reduce_concat=[2, 3, 4, 5],
  connectN=None, connects=None
)
"""  # noqa: W291 (the trailing space is in the source)
