"""Checks that need an interpreter of their own (TensorFlow's devices, the op's threads
and build, what an import loads), each a module the tests run as
`python -m subprocess_checks.<name>` (helpers.run_check). They print or write what
the test then compares, or fail with an assertion."""
