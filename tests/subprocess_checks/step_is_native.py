"""Prints whether KMeansStep() uses the fused op, with the build logged at INFO."""

import logging

logging.basicConfig(level=logging.INFO)

from transforms.step.step import KMeansStep  # noqa: E402 -- after the log is set up

print(KMeansStep().native)
