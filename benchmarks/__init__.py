"""dnpfs benchmarks: dnpfs next to kcat, plain aiokafka and a local FIFO.

`make bench` (python -m benchmarks) runs every scenario and writes
bench-results/results.json, plots and docs/benchmarks.md.  Layout:

- suite.py      the command line: which scenarios, sizes, where results go
- scenarios.py  bulk, small writes, latency, scaling (Kafka), embedded store
- steps.py      one measured transfer or probe, with its CPU and memory cost
- rig.py        daemons, timed child processes, /proc accounting, the broker
- clients.py    the plain aiokafka reference client (run as a child process)
- probes.py     byte counter, latency probe, many-pipe load (child processes)
- report.py     targets, tables and docs/benchmarks.md; plots.py the PNGs
- smoke.py      the ratios tests/bench checks against baseline.json
- profile.py    py-spy hot spots of the daemons (not part of `make bench`)
- *_ab.py       small_ab, embedded_ab, pyfuse3_ab: two trees (or interpreters)
                side by side, interleaved (not part of `make bench`); ab.py holds
                what they share
"""
