"""The algorithms, in NumPy, SciPy and scikit-learn: the Lloyd update and its partial sums,
the bottom-m sample and the seeding on it, choosing among candidate fits, the Ward merge,
and `UserInputError`. What runs once on one worker, on O(K x D) state or the bounded
sample, and what the tests check against scikit-learn. It imports only other `core`
modules: never TensorFlow, tf.Transform or Beam (tests/unit/test_layers.py checks), nor
`transforms.step`, `transforms.beam` or `pipeline`.
"""
