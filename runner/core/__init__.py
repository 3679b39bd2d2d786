"""The pure core: the modules that decide. Specs, GPU facts, state rules, compliance, placement,
money, the audit chain, the SLA and each workload kind's rules take rows and numbers and return
decisions; none of them does I/O (no engine, cluster, database or network), which
``tests/unit/test_pure_core.py`` checks module by module in a fresh interpreter.

Everything outside this package is an edge around it: the store keeps its decisions, the
supervisor acts on them through Ray and the agents, the API and CLI carry them to people.
Importing this package imports none of its modules, so each stays as cheap to load as it is."""
