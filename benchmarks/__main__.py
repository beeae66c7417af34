"""``python -m benchmarks <name>``: the same commands as ``e2u bench <name>``."""

from benchmarks.cli import bench_app

bench_app(prog_name="python -m benchmarks")
