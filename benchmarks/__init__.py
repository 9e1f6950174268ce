"""Benchmarks: shmring against the IPC channels a Python user would pick.

Run ``python -m benchmarks --help``. See ``benchmarks/README.md``.
"""
