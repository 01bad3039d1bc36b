"""The Sprint side behind ``sprint_control.control`` (the module RASR loads), one concern per module:

- ``log``: the module's ``print`` and its log lines;
- ``config``: RASR's config string and its values;
- ``guard``: the parent-death guard (a Sprint process whose trainer died must not live on);
- ``segments``: the hand-off of segments between the control thread and RASR's thread;
- ``rasr``: the calls into RASR's callback (criterion, orthography, automaton export);
- ``commands``: the handlers of the parent's commands, served by ``wire.server.CommandServer``;
- ``loop``: the control loop, in RASR's thread or a thread of its own.

``control.PythonControl`` is the facade RASR sees; it keeps the seed's names and delegates here.
"""
