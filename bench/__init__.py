"""Benchmark harness: brokerd side by side with RabbitMQ and Redis.

Run ``python -m bench --help`` from the repository root. See ``bench/README.md`` for the
methodology.
"""
