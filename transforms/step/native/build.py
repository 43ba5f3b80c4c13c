"""The fused K-Means step as a TensorFlow op, compiled on the machine that runs it.

`nearest_centroids.cc` ships with the package as source. The first process on
a machine that asks for it compiles it with the host's C++ compiler against the
installed TensorFlow's C API headers (`tf.sysconfig`), with `-march=native`, into
a cache directory (seconds, once: the C API's headers are plain C;
bench/RESULTS.md, 'Fixed costs'); every later process only loads the cached
library with `tf.load_op_library`. The cache key covers the source, TensorFlow's
version and flags, the compiler, the CPU's features and the build recipe, so a
new TensorFlow, compiler, machine type or recipe compiles again.

Where there is no compiler or compiling fails, `load()` returns None, says why
in the log once, and `KMeansStep` runs the same step with TensorFlow's own ops
(same results within float32 rounding; slower on CPU).

Environment (for operators, not code): SHARDMEANS_NATIVE_OP=0 skips the op;
SHARDMEANS_CACHE_DIR moves the cache (default ~/.cache/shardmeans; where it
cannot be written, $TMPDIR/shardmeans-UID); CXX names the compiler (default c++);
SHARDMEANS_OP_THREADS sets the op's threads, shared by all its calls in a process
(default: one per CPU the process may run on, its affinity mask; a CPU quota,
as in some containers, is not seen there).
"""

import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

SOURCE = Path(__file__).with_name("nearest_centroids.cc")
_COMPILE_TIMEOUT_S = 600


def _cpu_features() -> str:
    """The CPU's feature flags (what -march=native compiles for), or '' if unknown."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _cache_dir() -> Path:
    configured = os.environ.get("SHARDMEANS_CACHE_DIR")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "shardmeans"


def _writable(directory: Path) -> Path:
    """`directory`, created if need be; a per-user temporary one if it cannot be
    written (a read-only home in some containers)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        if os.access(directory, os.W_OK):
            return directory
    except OSError:
        pass
    fallback = Path(tempfile.gettempdir()) / f"shardmeans-{os.getuid()}"
    fallback.mkdir(parents=True, exist_ok=True)
    return fallback


# The -march flag sets to try, in order; the last, [], is a generic build (some
# compilers have no -march=native).
_ARCH_FLAGS = (["-march=native"], [])


def _compile(cxx: str, flags: list, target: Path) -> None:
    """Compile SOURCE into `target`, atomically: concurrent processes may race, none
    loads a half-written library."""
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        command = ["-shared", "-fPIC", "-O3", "-w", str(SOURCE), "-o", tmp] + flags
        native = None  # the first failed -march=native build, if one failed
        for arch in _ARCH_FLAGS:
            done = subprocess.run(
                [cxx] + arch + command, capture_output=True, text=True, timeout=_COMPILE_TIMEOUT_S
            )
            if done.returncode == 0:
                if not arch:  # slower, and easy to miss: say why
                    logging.warning(
                        "native op: the -march=native build failed, built for "
                        "a generic CPU instead: %s",
                        native.stderr.strip()[-2000:],
                    )
                os.replace(tmp, target)
                return
            native = native or done
        raise RuntimeError(f"{cxx} failed: {done.stderr.strip()[-2000:]}")
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@functools.lru_cache(maxsize=None)
def load():
    """The loaded op module (its op: `shardmeans_nearest_centroids`), or None.

    None when SHARDMEANS_NATIVE_OP=0, when no C++ compiler is found, or when
    compiling or loading fails; the reason is logged once per process.
    """
    if os.environ.get("SHARDMEANS_NATIVE_OP", "1") == "0":
        logging.info("native op: off (SHARDMEANS_NATIVE_OP=0)")
        return None
    import tensorflow as tf

    threads = os.environ.get("SHARDMEANS_OP_THREADS")
    if threads is not None and not (threads.isdigit() and 0 < int(threads) <= 9999):
        logging.warning(
            "native op: SHARDMEANS_OP_THREADS=%r is not a positive integer; "
            "ignored (one thread per CPU the process may run on)",
            threads,
        )
    cxx = shutil.which(os.environ.get("CXX", "c++"))
    if cxx is None:
        logging.warning(
            "native op: no C++ compiler found; the K-Means step runs with "
            "TensorFlow's own ops (slower on CPU)"
        )
        return None
    # The C API's headers and TensorFlow's framework library, which exports it.
    flags = [
        "-std=c++17",
        "-pthread",
        "-I" + tf.sysconfig.get_include(),
        *tf.sysconfig.get_link_flags(),
    ]
    key = hashlib.sha256(
        "\0".join(
            [
                SOURCE.read_text(),
                tf.__version__,
                " ".join(flags),
                cxx,
                platform.machine(),
                _cpu_features(),
                repr(_ARCH_FLAGS),
            ]
        ).encode()
    ).hexdigest()[:16]
    name = f"nearest_centroids-{key}.so"
    try:
        target = _cache_dir() / name
        if not target.exists():  # not built on this machine yet, or not where we can write
            target = _writable(_cache_dir()) / name
            if not target.exists():
                logging.info("native op: compiling %s into %s", SOURCE.name, target)
                _compile(cxx, flags, target)
        module = tf.load_op_library(str(target))
        if not hasattr(module, "shardmeans_nearest_centroids"):  # its registration failed
            raise RuntimeError(f"{target} registered no ShardmeansNearestCentroids op")
        return module
    except (OSError, RuntimeError, subprocess.SubprocessError, tf.errors.OpError) as e:
        logging.warning(
            "native op: unavailable (%s); the K-Means step runs with "
            "TensorFlow's own ops (slower on CPU)",
            e,
        )
        return None
