"""What the benchmark scenarios share: result files and tables, the progress line, CPU and memory
readings, the servers they start, the load generators, and the phases they measure.

A scenario (`bench/<name>.py`, or a package such as `bench/local/`) imports from here and never from
another scenario; `bench/cli.py` imports the scenarios. `tests/bench/test_scenario_imports.py` says so.
"""
