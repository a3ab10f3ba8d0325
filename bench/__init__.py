"""Benchmarks of the gateway. Each scenario starts what it needs on loopback and stops it afterwards."""
