"""Inference workload: an OpenAI-compatible embeddings server with dynamic batching.

Run as ``python -m workloads.inference``; see README.md beside this file for the API, the
environment it reads and how batching works.
"""
