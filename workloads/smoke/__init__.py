"""Smoke workload: proves an image can run Python + torch and do correct math (``python -m workloads.smoke``)."""
