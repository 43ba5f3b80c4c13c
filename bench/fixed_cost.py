"""The fixed cost of a short job: shardmeans' start-up and a small fit against scikit-learn's.

Usage: python bench/fixed_cost.py [--rows 200000] [--features 8] [--k 6] [--repeats 5]
       [--fit_repeats 3] [--dtype float32] [--repo DIR] [--workdir /tmp/shardmeans-bench]
       [--phases N] [--phases_only] [--cprofile FILE]

Every command runs as a subprocess of this interpreter (the project's .venv), from
`--repo` (default: this checkout): `python -m pipeline` imports the `pipeline` and
`transforms` packages of the directory it runs in, so `--repo` measures another
checkout's code (an older commit, extracted with `git archive`) on the same
installed stack. Pairs, each run alternately A B A B, medians and their ratio:

  - `shardmeans --help` against `python -c "import sklearn.cluster"`;
  - `shardmeans fit --help` and `shardmeans generate --help` against the same;
  - a fit's time to its first log line on stderr (what a user waits with nothing
    on the console) against the same import;
  - the demo's fit end to end (`make demo`'s flags: 200k x 8, K=6, the defaults)
    against bench/sklearn_job.py on the same Parquet files (read, StandardScaler,
    KMeans with its defaults, write the labels). The files are float32 by default
    (`--dtype`), so scikit-learn computes at the precision shardmeans' step does;
    `make demo`'s own data are float64.

`python -c pass` is printed as the floor of any Python process. OPENBLAS_CORETYPE
and OPENBLAS_L2_SIZE are unset for every command (bench/README.md).

Where a fit's time goes: `--phases N` then runs the same fit N more times, each
in a child process (this script with `--phases_child`) that times the driver's
phases around the calls that make them: the imports and the input's layout
before the graph, building the graph (`build_fit_pipeline`), Beam's translation
(`Pipeline.run` less the stages), and each runner stage's wall time
(`FnApiRunner._execute_bundle`, the DirectRunner's one bundle a stage), summed by
the step it belongs to (reading, analysis, initialisation, rounds, final pass,
model export, report, ...), with the number of stages; the medians are printed.
`--cprofile FILE` writes the first child's cProfile of the whole driver;
`--phases_only` runs the profile alone (to alternate two checkouts' profiles).
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

from side_by_side import ENV, ROOT, blas_info, run, step_kind


def timed(cmd, cwd):
    """Wall seconds of `cmd` run to its end; stops this script if it fails."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return seconds


def first_line_and_end(cmd, cwd):
    """(seconds to the first line on stderr, seconds to the end) of `cmd`."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    first = None
    tail = []
    for line in proc.stderr:
        if first is None:
            first = time.perf_counter() - start
        tail = (tail + [line])[-40:]
    if proc.wait():
        sys.exit(f"failed: {' '.join(cmd)}\n{''.join(tail)}")
    return first, time.perf_counter() - start


# A stage's group: the first pattern that its first step matches. Beam names a fused
# stage after its steps, "((a)+(b))+(c)", with '/' or '-' between a label's parts;
# the first step that is not a read of a PCollection is where the stage starts
# (the reading stage fuses most of KMeans' analysis and sampling after it).
STAGE_GROUPS = (
    ("rounds", r"Lloyd[-/]Round"),
    ("rounds: final update", r"Lloyd[-/]Candidates"),
    ("choice among candidates", r"KMeans[-/]Choose"),
    ("final pass", r"FinalAssign"),
    ("model export", r"ExportModel"),
    ("report and results (WriteResults)", r"WriteResults"),
    ("sample and initialisation", r"InitCentroids|BottomSample|StandardizeSample"),
    ("analysis (tf.Transform)", r"Analyze|WriteTransformFn"),
    ("reading and validating", r"^(ref_AppliedPTransform_)?Read[-/]"),
    ("writing and publishing", r"Write|Publish|Materialize"),
)


def stage_group(name):
    steps = [step.strip("() ") for step in name.split("+")]
    first = next((s for s in steps if not s.startswith("ref_PCollection")), steps[0])
    for group, pattern in STAGE_GROUPS:
        if re.search(pattern, first):
            return group
    return "other stages"


def phases_child(out, argv):
    """Run `shardmeans fit argv` in this process, timing its phases; write them to `out`
    (JSON: seconds by phase, and stages by group). The calls wrapped are the
    driver's own (pipeline.fit.build_fit_pipeline) and Beam's
    (Pipeline.run, FnApiRunner.run_stages and _execute_bundle)."""
    start = time.perf_counter()
    sys.path.insert(0, os.getcwd())  # the --repo checkout's pipeline and transforms
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # as pipeline.cli.main sets it
    from apache_beam import pipeline as beam_pipeline
    from apache_beam.runners.portability.fn_api_runner import fn_runner

    from pipeline import cli, fit

    seconds, stages = {}, {}
    marks = {}

    def timed_call(owner, name, phase):
        original = getattr(owner, name)

        def wrapper(*args, **kwargs):
            marks.setdefault(phase + " start", time.perf_counter())
            begin = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                seconds[phase] = seconds.get(phase, 0.0) + time.perf_counter() - begin

        setattr(owner, name, wrapper)

    timed_call(fit, "build_fit_pipeline", "build")
    timed_call(beam_pipeline.Pipeline, "run", "run")
    timed_call(fn_runner.FnApiRunner, "run_stages", "stages")
    execute = fn_runner.FnApiRunner._execute_bundle

    def execute_bundle(self, context, bundle, bundle_input):
        begin = time.perf_counter()
        try:
            return execute(self, context, bundle, bundle_input)
        finally:
            group = stage_group(bundle.stage.name)
            count, total = stages.get(group, (0, 0.0))
            stages[group] = (count + 1, total + time.perf_counter() - begin)

    fn_runner.FnApiRunner._execute_bundle = execute_bundle
    profile = None
    if os.environ.get("FIXED_COST_CPROFILE"):
        import cProfile

        profile = cProfile.Profile()
        profile.enable()
    status = cli.main(["fit", *argv])
    if profile is not None:
        profile.disable()
        profile.dump_stats(os.environ["FIXED_COST_CPROFILE"])
    total = time.perf_counter() - start
    phases = {
        "imports, options and the input's layout": marks["build start"] - start,
        "graph construction (build_fit_pipeline)": seconds["build"],
        "translation and fusion (Pipeline.run less the stages)": seconds["run"] - seconds["stages"],
        "the stages (FnApiRunner.run_stages)": seconds["stages"],
        "after the run (checks, summary)": total - (marks["run start"] - start) - seconds["run"],
        "total": total,
    }
    with open(out, "w") as f:
        json.dump({"status": status, "phases": phases, "stages": stages}, f)
    sys.stdout.flush()
    os._exit(0)  # as pipeline.cli.run exits: no interpreter teardown


def profile_phases(fit_argv, repo, repeats, cprofile, workdir):
    """Run the fit `repeats` times in phases_child processes; print the median of each phase."""
    runs = []
    for i in range(repeats):
        out = os.path.join(workdir, f"phases-{i}.json")
        env = dict(ENV)
        if cprofile and i == 0:
            env["FIXED_COST_CPROFILE"] = os.path.abspath(cprofile)
        cmd = [sys.executable, os.path.abspath(__file__), "--phases_child", out, "--", *fit_argv]
        proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True)
        if proc.returncode or not os.path.exists(out):
            sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
        with open(out) as f:
            runs.append(json.load(f))
    print(f"where the fit's time goes: medians of {repeats} in-process runs (seconds)")
    for name in runs[0]["phases"]:
        values = [r["phases"][name] for r in runs]
        print(f"  {name:<58}{statistics.median(values):>8.2f}  {_spread(values)}")
    print("  the stages by step (stages; seconds):")
    groups = sorted({g for r in runs for g in r["stages"]}, key=_group_order)
    for group in groups:
        counts = [r["stages"].get(group, (0, 0.0))[0] for r in runs]
        values = [r["stages"].get(group, (0, 0.0))[1] for r in runs]
        print(
            f"    {group:<45}{statistics.median(counts):>5.0f}"
            f"{statistics.median(values):>9.2f}  {_spread(values)}"
        )
    if cprofile:
        print(f"cProfile of the first run's driver: {cprofile}")


def _group_order(group):
    names = [g for g, _ in STAGE_GROUPS]
    return names.index(group) if group in names else len(names)


def _spread(values):
    return f"({min(values):.2f}-{max(values):.2f})" if len(values) > 1 else ""


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--features", type=int, default=8)
    parser.add_argument("--k", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--fit_repeats", type=int, default=3)
    parser.add_argument("--repo", default=ROOT)
    parser.add_argument("--workdir", default="/tmp/shardmeans-bench")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--phases", type=int, default=0, help="in-process profiled fits")
    parser.add_argument("--cprofile", default=None, help="the first profiled fit's cProfile")
    parser.add_argument(
        "--phases_only", action="store_true", help="the --phases profile alone, no comparison"
    )
    parser.add_argument("--phases_child", default=None, help=argparse.SUPPRESS)
    args, child_argv = parser.parse_known_args()
    if args.phases_child:
        phases_child(args.phases_child, [a for a in child_argv if a != "--"])
    if child_argv:
        parser.error(f"unrecognized arguments: {' '.join(child_argv)}")
    repo = os.path.abspath(args.repo)
    py = sys.executable
    data_dir = os.path.join(
        args.workdir, f"demo-{args.rows}x{args.features}-c{args.k}-{args.dtype}"
    )
    data = os.path.join(data_dir, "*.parquet")
    if not os.path.isdir(data_dir):
        run(
            [
                py,
                "-m",
                "pipeline",
                "generate",
                "--output",
                data_dir,
                "--rows",
                str(args.rows),
                "--features",
                str(args.features),
                "--clusters",
                str(args.k),
                "--format",
                "parquet",
                "--dtype",
                args.dtype,
            ]
        )
    out = os.path.join(args.workdir, "fixed-cost-out")
    fit = [py, "-m", "pipeline", "fit", "--input", data, "--output", out + "-sm"]
    fit += ["--k", str(args.k), "--id_column", "id", "--overwrite"]
    sk_fit = [py, os.path.join(ROOT, "bench", "sklearn_job.py"), "--input", data]
    sk_fit += ["--output", out + "-sk", "--k", str(args.k)]
    sk_import = [py, "-c", "import sklearn.cluster"]
    quick = {
        "python -c pass": [py, "-c", "pass"],
        "shardmeans --help": [py, "-m", "pipeline", "--help"],
        "shardmeans fit --help": [py, "-m", "pipeline", "fit", "--help"],
        "shardmeans generate --help": [py, "-m", "pipeline", "generate", "--help"],
    }
    if args.phases_only:
        print(f"code: {repo}; data: {args.rows} rows x {args.features} features, K={args.k}")
        timed(fit, repo)  # untimed: the page cache, the op's build
        profile_phases(fit[4:], repo, max(args.phases, 1), args.cprofile, args.workdir)
        return
    print(f"BLAS (both sides): {blas_info()}")
    print(f"shardmeans step: {step_kind()}")
    print(f"code: {repo}; data: {args.rows} rows x {args.features} features, K={args.k}")

    times = {name: [] for name in [*quick, "import sklearn.cluster", "sklearn fit"]}
    times.update({"fit, first log line": [], "fit, end to end": []})
    # Untimed: the page cache, and the op's build (step_kind above) before any timed fit.
    timed(fit, repo)
    timed(sk_fit, repo)
    for _ in range(args.repeats):
        for name, cmd in quick.items():
            times[name].append(timed(cmd, repo))
            times["import sklearn.cluster"].append(timed(sk_import, repo))
    for _ in range(args.fit_repeats):
        first, end = first_line_and_end(fit, repo)
        times["fit, first log line"].append(first)
        times["fit, end to end"].append(end)
        times["sklearn fit"].append(timed(sk_fit, repo))

    med = {name: statistics.median(v) for name, v in times.items()}
    print(f"{'measure':<30}{'shardmeans':>12}{'scikit-learn':>14}{'ratio':>8}")
    peer = med["import sklearn.cluster"]
    print(f"{'python -c pass (floor)':<30}{med['python -c pass']:>12.2f}")
    for name in ("shardmeans --help", "shardmeans fit --help", "shardmeans generate --help"):
        print(f"{name:<30}{med[name]:>12.2f}{peer:>14.2f}{med[name] / peer:>8.2f}")
    first = med["fit, first log line"]
    print(f"{'fit, first log line':<30}{first:>12.2f}{peer:>14.2f}{first / peer:>8.2f}")
    end, sk = med["fit, end to end"], med["sklearn fit"]
    print(f"{'fit, end to end':<30}{end:>12.2f}{sk:>14.2f}{end / sk:>8.2f}")
    print("raw:", {name: [round(t, 3) for t in v] for name, v in times.items()})
    if args.phases:
        profile_phases(fit[4:], repo, args.phases, args.cprofile, args.workdir)


if __name__ == "__main__":
    main()
