"""The wire: how matrices and commands cross the pipes between a parent and a Sprint child.

- ``constants``: the protocol-v2 layout's numbers (``csrc/frame.h`` is the C side of the same layout);
- ``framing``: reading and writing v2 frames, the compiled core or its pure-Python twin;
- ``protocol``: the v1 codec, the negotiation and the links;
- ``shm``: the shared-memory region that carries matrices when both ends map it.

This layer knows neither RASR nor processes: it moves bytes between two file descriptors.
"""
