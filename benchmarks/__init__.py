"""spiffe-bridge benchmarks: ``python -m benchmarks`` (see ``__main__``), one module per figure.

Kept import-free so that probe subprocesses (``python -m benchmarks._probe``)
load nothing they do not measure.
"""
