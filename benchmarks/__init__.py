"""criadapt's benchmarks: run on demand, never part of the test run.

Each benchmark measures criadapt and a reference in the same run and reports ratios; results
go to ``benchmarks/results/<date>-<name>.md``.
"""
