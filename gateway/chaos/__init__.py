"""The reliability harness's library: a set checker over (reader truth, gateway database, cloud), and the
supervisor that crash-loops the real daemon. Shared by tests/chaos (bounded CI profile) and
benchmarks/chaos.py (the long profile)."""
