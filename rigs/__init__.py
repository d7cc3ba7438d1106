"""Shared rigs for benchmarks, commands and tests: a broker on a free port, an HTTP server on one,
benchmark reports.

They live apart from `device` and `pricing` so that a test, the pricing service's benchmark and the
appliance's own benchmarks use the same rig without importing each other's commands (issue 16).
"""
