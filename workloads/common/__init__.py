"""Helpers shared by workloads and by the control plane: stdlib only (boto3 imported lazily).

``artifacts``: one store interface over ``file://`` and ``s3://`` with atomic, checksummed
publishing; ``report``: the structured ``{"runner": ...}`` lines a workload prints.
"""
