"""Cloud-gaming workload: a game rendered headless, streamed to a browser, inputs back.

Run as ``python -m workloads.gaming``; the session's settings come from the environment
(``settings.py``), and ``README.md`` beside this file says how it works and why.
"""
