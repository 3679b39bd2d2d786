"""A network of machines on one machine: the multi-host harness of tests and benchmarks.

``harness.hosts`` makes each provider "host" a Linux network namespace with its own address on a
bridge whose other side is the head (this machine's root namespace), its own ``dockerd`` (data
root, exec root, socket, bridge and iptables of its own) and links that can be shaped and cut.
``harness.network`` puts a head, a registry and N such hosts together and takes them all down
again, also after a failure. It needs root (namespaces, veths, dockerd), as CI has.
"""
