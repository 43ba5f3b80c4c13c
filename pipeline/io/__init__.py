"""The job's inputs: matching and opening input files (`files`), the columns of all of them
(`layout`), reading CSV, Parquet and TFRecord as Arrow record batches (`readers`), which rows
are valid (`validation`), and the `ReadValidRows` PTransform with its dead letter (`ingest`).
It may import Beam, `transforms` and other `pipeline.io` modules; never `pipeline.outputs`.
"""
