"""The wire: how matrices and commands cross the pipes between a parent and a Sprint child.

- ``constants``: the protocol-v2 layout's numbers (``csrc/frame.h`` is the C side of the same layout);
- ``framing``: reading and writing v2 frames, the compiled core or its pure-Python twin;
- ``v1``: RETURNN's protocol: the codec and its safe reader;
- ``link``, ``parent_link``, ``child_link``: the two ends of a connection (``ParentLink`` asks and
  matches each answer to its request, ``ChildLink`` answers);
- ``server``: the child's command loop (``CommandServer``), the one every child runs;
- ``limits``: the checks a sender runs against the receiver's limits;
- ``protocol``: the public names of all of these, and the negotiation;
- ``shm``: the shared-memory region that carries matrices when both ends map it.

This layer knows neither RASR nor processes: it moves bytes between two file descriptors.
"""
