"""The Beam layer: the PTransforms a pipeline composes (`KMeans`, `AssignClusters`), the
rounds, the shard sink and cache, the DoFns and the CombineFns. It may import Beam,
tf.Transform, `transforms.step` and `transforms.core`; never `pipeline`.
"""
