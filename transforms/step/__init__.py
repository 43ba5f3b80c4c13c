"""TensorFlow on the workers: the K-Means step (nearest centroids and partial sums under a
MirroredStrategy), its devices and memory budgets, the fused C++ op and its build
(`native/`), the tf.Transform `preprocessing_fn` and the exported SavedModel. It may import
TensorFlow and tf.Transform, and other `step` modules; never Beam, `transforms.core`,
`transforms.beam` or `pipeline`.
"""
