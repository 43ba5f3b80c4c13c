"""The job's outputs: the writers of rejected/, assignments/, centroids and metrics
(`writers`), the HTML report (`report`), and the output directory's protocol: checks, lock,
staging, publishing (`run_output`). It may import Beam, `transforms` and other
`pipeline.outputs` modules; never `pipeline.io`. Importing the package imports nothing.
"""
