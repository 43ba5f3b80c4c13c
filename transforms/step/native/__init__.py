"""The step's fused TensorFlow op for CPUs: `nearest_centroids.cc`, shipped as source, and
`build.py`, which compiles it on the machine that runs it (on first use, cached) and loads it.
It may import TensorFlow; nothing else of shardmeans.
"""
