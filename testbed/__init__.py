"""What the tests and the benchmarks both drive: real processes (a worker, an ASGI server, a
Redis of their own), the rows they need, clients for every transport, a webhook receiver,
and the one wait helper (`testbed.waiting.wait_until`).

tests/ and bench/ import it; it imports neither (tests/bench/test_layout.py checks both ways).
"""
