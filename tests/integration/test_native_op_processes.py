"""The fused step op (transforms/step/native/) in processes of its own: the op's thread
count, the fall-backs to TensorFlow's ops, a build from scratch, and builds for every
narrower vector width, each of which passes the result tests of
tests/unit/test_native_op.py."""

import os
import platform
import subprocess
import sys

import numpy as np
import pytest

from transforms.step.native import build as native_op

from helpers import ROOT, many_units_case, run_check

UNIT_TESTS = os.path.join(ROOT, "tests", "unit", "test_native_op.py")


@pytest.mark.parametrize("threads", ["one CPU", "3", "two"])
def test_results_do_not_depend_on_how_many_threads_the_op_has(steps, tmp_path, threads):
    """The op's pool has a thread per CPU the process may use, or SHARDMEANS_OP_THREADS:
    confined to one CPU (its affinity, as taskset sets it), or with 3 threads on any
    machine, a process gets this one's results bit for bit. A value that is not a
    positive integer ("two") is ignored, with a warning."""
    env = {k: v for k, v in os.environ.items() if k != "SHARDMEANS_OP_THREADS"}
    pin = []
    if threads == "one CPU":
        pin = ["--one-cpu"]
    else:
        env["SHARDMEANS_OP_THREADS"] = threads
    proc = run_check("op_threads", tmp_path / "other.npz", *pin, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    warned = "SHARDMEANS_OP_THREADS='two' is not a positive integer" in proc.stderr
    assert warned == (threads == "two"), proc.stderr[-3000:]
    x, groups = many_units_case()
    ours = [getattr(g, f) for g in steps[0].groups(x, groups) for f in g._fields]
    ours = [value for value in ours if value is not None]  # (as op_threads saves them)
    other = np.load(tmp_path / "other.npz")
    assert len(other.files) == len(ours)
    for i, value in enumerate(ours):
        np.testing.assert_array_equal(other[f"arr_{i}"], value)


def test_without_the_op_the_step_falls_back_to_tensorflow_ops(tmp_path):
    """No compiler, or the op switched off: TensorFlow's ops and the reason in the log;
    KMeansStep(native=True) refuses."""
    for env, reason in [
        ({"CXX": str(tmp_path / "no-such-compiler")}, "no C++ compiler found"),
        ({"SHARDMEANS_NATIVE_OP": "0"}, "SHARDMEANS_NATIVE_OP=0"),
    ]:
        proc = run_check(
            "step_without_op",
            env={**os.environ, "SHARDMEANS_CACHE_DIR": str(tmp_path / "cache"), **env},
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "refused: KMeansStep(native=True)" in proc.stdout
        assert reason in proc.stderr
        assert not (tmp_path / "cache").exists()


def test_a_fresh_build_is_for_this_cpu_and_goes_to_a_temporary_dir_if_need_be(tmp_path):
    """A build from scratch, where SHARDMEANS_CACHE_DIR cannot be a directory: the op is
    compiled under TMPDIR, and with -march=native, not the generic fall-back (which
    TensorFlow's C++ headers forced on AVX512-FP16 CPUs when the op was built on them)."""
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    proc = run_check(
        "step_is_native",
        timeout=600,
        env={
            **os.environ,
            "SHARDMEANS_CACHE_DIR": str(not_a_dir / "cache"),
            "TMPDIR": str(tmp_path),
        },
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "True", proc.stderr[-3000:]
    assert "native op: compiling" in proc.stderr
    assert "built for a generic CPU instead" not in proc.stderr, proc.stderr[-3000:]
    assert list((tmp_path / f"shardmeans-{os.getuid()}").glob("nearest_centroids-*.so"))


def _assert_result_tests_pass(env) -> str:
    """The result tests of tests/unit/test_native_op.py, in a subprocess with `env` (which
    op build they get, built there if not cached); returns their output, warnings logged
    included."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            UNIT_TESTS,
            "-k",
            "equals or per_row or ties or past_the_cache",
            "-o",
            "log_cli=true",
            "--log-cli-level=WARNING",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


# (-march, the CPU flag it needs, the op's vector width): the op's register tiles
# differ by width, and -march=native builds only the host's.
_WIDTHS = [("x86-64-v3", "avx2", 8), ("x86-64-v4", "avx512f", 16)]


def _narrower_builds() -> list:
    """ "generic" (what a failed -march=native falls back to: SSE2's 4 lanes on x86-64),
    then each -march of _WIDTHS narrower than the host's own that this CPU runs."""
    if platform.machine() != "x86_64":
        return ["generic"]
    flags = native_op._cpu_features().split()  # what -march=native builds for
    host = max([4] + [w for _, f, w in _WIDTHS if f in flags])
    return ["generic"] + [arch for arch, f, w in _WIDTHS if f in flags and w < host]


@pytest.mark.timeout(1200)  # past the 900 s its result tests may take in their process
@pytest.mark.parametrize("build", _narrower_builds())
def test_every_narrower_build_gives_the_same_results(tmp_path, build):
    """Built narrower than the host's -march=native (the width the rest of the suite
    runs), the op passes the result tests of tests/unit/test_native_op.py. "generic": a
    compiler that cannot build with -march=native, so the op is built without it (slower,
    so the log says why)."""
    log = tmp_path / "cxx.log"
    cxx = tmp_path / "cxx"
    if build == "generic":
        cxx.write_text(
            "#!/bin/sh\n"
            'case "$*" in *-march=native*) echo "no native build here" >&2; exit 1;; '
            "esac\n"
            'exec c++ "$@"\n'
        )
    else:
        cxx.write_text(
            "#!/bin/sh\n"
            f'args=$(echo "$@" | sed "s/-march=native/-march={build}/")\n'
            f'echo "$args" >> {log}\n'
            "exec c++ $args\n"
        )
    cxx.chmod(0o755)
    output = _assert_result_tests_pass(
        {**os.environ, "CXX": str(cxx), "SHARDMEANS_CACHE_DIR": str(tmp_path / "cache")}
    )
    if build == "generic":
        assert "built for a generic CPU instead: no native build here" in output
    else:
        assert f"-march={build} " in log.read_text()  # built here, for that width
