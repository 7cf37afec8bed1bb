"""fundarb_core: the pure domain logic of fundarb.

Venues, symbols, funding math, sources, validation and storage live here so that they can be
used (and tested) without Dagster; ``fundarb_pipelines`` wraps them as Dagster definitions.
This package must never import ``dagster``.
"""

__version__ = "0.1.0"
