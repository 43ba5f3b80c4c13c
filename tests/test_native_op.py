"""The fused step op (transforms/step/native/nearest_centroids.cc) against TensorFlow's own
ops and NumPy."""

import concurrent.futures
import os
import platform
import subprocess
import sys

import numpy as np
import pytest

from transforms.step.native import build as native_op
from transforms.step.step import KMeansStep

from conftest import ROOT


@pytest.fixture(scope="module")
def steps():
    """(the fused op, TensorFlow's ops): the op must build here, else this fails."""
    return KMeansStep(native=True), KMeansStep(native=False)


@pytest.mark.parametrize(
    "n,d,ks",
    [
        (1, 3, [2]),
        (255, 5, [7]),
        (4099, 6, [7]),
        (3000, 33, [70]),  # several register tiles of centroids; D not a multiple of the lanes
        (2000, 4, [3, 8, 2]),  # groups of different K in one call (padding centroids)
        (70000, 16, [64, 64, 64, 64]),  # more rows than a work unit; restarts together
    ],
)
def test_fused_op_equals_tensorflow_ops_and_numpy(steps, n, d, ks):
    native, xla = steps
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, d)).astype(np.float32)
    groups = [rng.normal(size=(k, d)).astype(np.float32) for k in ks]
    for c, got, ref in zip(groups, native.groups(x, groups), xla.groups(x, groups)):
        dist = ((x[:, None, :].astype(np.float64) - c[None]) ** 2).sum(-1)
        labels = dist.argmin(1)
        np.testing.assert_array_equal(got.labels, labels)
        np.testing.assert_array_equal(got.labels, ref.labels)
        np.testing.assert_allclose(got.sq_dist, dist.min(1), rtol=1e-5, atol=1e-6)
        sums = np.zeros_like(c, dtype=np.float64)
        np.add.at(sums, labels, x.astype(np.float64))
        np.testing.assert_allclose(got.sums, sums, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(got.sums, ref.sums, rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(got.counts, np.bincount(labels, minlength=len(c)))
        assert got.inertia == pytest.approx(dist.min(1).sum(), rel=1e-6)
        assert got.inertia == pytest.approx(ref.inertia, rel=1e-6)
        np.testing.assert_array_equal(got.far_rows, ref.far_rows)
        np.testing.assert_array_equal(got.far_labels, labels[got.far_rows])
        np.testing.assert_array_equal(got.far_sq_dist, got.sq_dist[got.far_rows])
        np.testing.assert_allclose(got.far_sq_dist, ref.far_sq_dist, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n,d,ks", [(1, 3, [2]), (5000, 33, [70, 5]), (70000, 16, [64, 64])])
def test_without_per_row_results_the_partials_are_the_same(steps, n, d, ks):
    """per_row=False (a round's call): no labels or distances, the same sums, counts,
    inertia and far rows, from both steps."""
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, d)).astype(np.float32)
    groups = [rng.normal(size=(k, d)).astype(np.float32) for k in ks]
    for step in steps:
        for full, lean in zip(step.groups(x, groups), step.groups(x, groups, per_row=False)):
            assert lean.labels is None and lean.sq_dist is None
            np.testing.assert_array_equal(lean.sums, full.sums)
            np.testing.assert_array_equal(lean.counts, full.counts)
            assert lean.inertia == full.inertia
            for field in ("far_rows", "far_sq_dist", "far_labels"):
                np.testing.assert_array_equal(getattr(lean, field), getattr(full, field))


def test_fused_op_takes_the_first_centroid_on_ties(steps):
    """Exact ties: the first nearest centroid wins, and equally far rows keep row order."""
    native, xla = steps
    x = np.zeros((300, 4), np.float32)
    x[:, 0] = np.repeat([0.0, 2.0, -2.0], 100)
    # centroid 1 repeats centroid 0; rows at 0 are equally far from centroids 0, 1 and 2
    c = np.array([[1, 0, 0, 0], [1, 0, 0, 0], [-1, 0, 0, 0], [0, 1, 0, 0]], np.float32)
    got, ref = native(x, c), xla(x, c)
    np.testing.assert_array_equal(got.labels, np.repeat([0, 0, 2], 100))
    np.testing.assert_array_equal(got.labels, ref.labels)
    np.testing.assert_array_equal(got.far_rows, ref.far_rows)
    np.testing.assert_array_equal(got.far_rows, np.arange(16))  # all at distance 1: row order


def _many_units_case():
    """(x, groups): more rows than the op's work units (4,096 rows each) hold, so its
    threads share them out. Rows scaled over 12 orders of magnitude: their float64 sums
    round, so summed in another grouping they differ in the last bits."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(70000, 16)) * 10.0 ** rng.uniform(-6, 6, size=(70000, 1))
    x = x.astype(np.float32)
    return x, [rng.normal(size=(64, 16)).astype(np.float32) for _ in range(3)]


@pytest.mark.parametrize("threads", ["one CPU", "3", "two"])
def test_results_do_not_depend_on_how_many_threads_the_op_has(steps, tmp_path, threads):
    """The op's pool has a thread per CPU the process may use, or SHARDMEANS_OP_THREADS:
    confined to one CPU (its affinity, as taskset sets it), or with 3 threads on any
    machine, a process gets this one's results bit for bit. A value that is not a
    positive integer ("two") is ignored, with a warning."""
    env = {k: v for k, v in os.environ.items() if k != "SHARDMEANS_OP_THREADS"}
    pin = ""
    if threads == "one CPU":
        pin = "os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\n"
    else:
        env["SHARDMEANS_OP_THREADS"] = threads
    code = (
        "import os, sys, numpy as np\n" + pin + "sys.path.insert(0, 'tests')\n"
        "from test_native_op import _many_units_case\n"
        "from transforms.step.step import KMeansStep\n"
        "x, groups = _many_units_case()\n"
        "r = KMeansStep(native=True).groups(x, groups)\n"
        f"np.savez({str(tmp_path / 'other.npz')!r}, "
        "*[getattr(g, f) for g in r for f in g._fields])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    warned = "SHARDMEANS_OP_THREADS='two' is not a positive integer" in proc.stderr
    assert warned == (threads == "two"), proc.stderr[-3000:]
    x, groups = _many_units_case()
    ours = [getattr(g, f) for g in steps[0].groups(x, groups) for f in g._fields]
    other = np.load(tmp_path / "other.npz")
    assert len(other.files) == len(ours)
    for i, value in enumerate(ours):
        np.testing.assert_array_equal(other[f"arr_{i}"], value)


def test_concurrent_calls_share_the_pool_and_each_gets_its_own_results(steps):
    """Calls from several threads at once (a worker's Beam threads, or the replicas of
    a strategy) each get what the same call alone returns."""
    x, groups = _many_units_case()
    native = steps[0]
    calls = [(x[i * 7000 :], groups[i:]) for i in range(3)]
    alone = [native.groups(rows, cs) for rows, cs in calls]
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        together = list(pool.map(lambda call: native.groups(*call), calls * 2))
    for got, want in zip(together, alone * 2):
        for a, b in zip(got, want):
            for field in a._fields:
                np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_without_the_op_the_step_falls_back_to_tensorflow_ops(tmp_path):
    """No compiler, or the op switched off: TensorFlow's ops and the reason in the log;
    KMeansStep(native=True) refuses."""
    code = (
        "import logging, numpy as np\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "from transforms.step.step import KMeansStep\n"
        "step = KMeansStep()\n"
        "assert not step.native\n"
        "x = np.arange(12, dtype=np.float32).reshape(6, 2)\n"
        "assert step(x, x[:2]).counts.tolist() == [1, 5]\n"
        "try:\n"
        "    KMeansStep(native=True)\n"
        "except RuntimeError as e:\n"
        "    print('refused:', e)\n"
    )
    for env, reason in [
        ({"CXX": str(tmp_path / "no-such-compiler")}, "no C++ compiler found"),
        ({"SHARDMEANS_NATIVE_OP": "0"}, "SHARDMEANS_NATIVE_OP=0"),
    ]:
        proc = subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
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
    code = (
        "import logging\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "from transforms.step.step import KMeansStep\n"
        "print(KMeansStep().native)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
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


def test_a_library_that_registers_no_op_is_not_used(tmp_path, monkeypatch, caplog):
    """A build whose op did not register (the C API's registration failed) falls back
    to TensorFlow's ops with the reason in the log, instead of failing at first call."""
    source = tmp_path / "no_op.cc"
    source.write_text('extern "C" int shardmeans_no_op() { return 0; }\n')
    monkeypatch.setattr(native_op, "SOURCE", source)
    monkeypatch.setenv("SHARDMEANS_CACHE_DIR", str(tmp_path / "cache"))
    assert native_op.load.__wrapped__() is None  # past the per-process cache of load()
    assert "registered no ShardmeansNearestCentroids op" in caplog.text


def _assert_result_tests_pass(env) -> str:
    """This module's result tests, in a subprocess with `env` (which op build they get,
    built there if not cached); returns their output, warnings logged included."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            __file__,
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


def test_centroid_sets_past_the_cache_bound_go_to_the_xla_step(steps):
    from transforms.step.step import NATIVE_MAX_CENTROID_BYTES

    native, xla = steps
    rng = np.random.default_rng(1)
    d = 64
    k = NATIVE_MAX_CENTROID_BYTES // (4 * d) + 1
    small, large = np.zeros((1, 64, d), np.float32), np.zeros((1, k, d), np.float32)
    assert native.fused_for(small) and not native.fused_for(large)
    assert not xla.fused_for(small)
    x = rng.normal(size=(300, d)).astype(np.float32)
    c = rng.normal(size=(k, d)).astype(np.float32)
    got = native(x, c)
    np.testing.assert_array_equal(
        got.labels, ((x[:, None, :].astype(np.float64) - c[None]) ** 2).sum(-1).argmin(1)
    )


def test_no_far_rows_asked_for():
    x = np.random.default_rng(2).normal(size=(500, 3)).astype(np.float32)
    got, ref = (KMeansStep(n_far=0, native=native)(x, x[:4]) for native in (True, False))
    assert len(got.far_rows) == len(ref.far_rows) == 0
    np.testing.assert_array_equal(got.counts, ref.counts)


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


@pytest.mark.parametrize("build", _narrower_builds())
def test_every_narrower_build_gives_the_same_results(tmp_path, build):
    """Built narrower than the host's -march=native (the width the rest of the suite
    runs), the op passes this module's result tests. "generic": a compiler that cannot
    build with -march=native, so the op is built without it (slower, so the log says why)."""
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
