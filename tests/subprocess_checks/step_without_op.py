"""Where the op cannot be built or is switched off (the test's environment says which):
KMeansStep() runs TensorFlow's ops (logged at INFO, with the reason), and
KMeansStep(native=True) refuses, printed as "refused: ..."."""

import logging

import numpy as np

logging.basicConfig(level=logging.INFO)

from transforms.step.step import KMeansStep  # noqa: E402 -- after the log is set up

step = KMeansStep()
assert not step.native
x = np.arange(12, dtype=np.float32).reshape(6, 2)
assert step(x, x[:2]).counts.tolist() == [1, 5]
try:
    KMeansStep(native=True)
except RuntimeError as e:
    print("refused:", e)
