"""runner: run containerized GPU workloads on a Ray cluster of rented provider nodes.

The package is split so that the pure core (``catalog``, ``spec``, ``errors``) can be imported
and tested without Ray, Docker, a database or a network; everything that talks to those lives
in its own module and depends on the core, never the other way round.
"""

__version__ = "0.1.0"
