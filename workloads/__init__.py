"""Workloads that runner ships in its images; each runs as ``python -m workloads.<name>``."""
