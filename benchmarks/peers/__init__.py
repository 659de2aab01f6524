"""The capacity workload on conveyor's asyncio peers, arq and Taskiq (benchmarks/concurrency.py
`peers`). They are installed only for the benchmark, in a venv of their own
(benchmarks/.peers-venv, or BENCH_PEERS_VENV; made by venv.py on first use, never in
pyproject). `arq_side.py` and `taskiq_side.py` run in that venv: each is a peer's app, its
worker and a command line (`fill N SECONDS`, `worker`, `check N`); `drive.py` runs them from
the main venv. This package imports nothing of conveyor's, nor of the peers' here."""
