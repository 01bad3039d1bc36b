"""RASR's automaton builder in-process, under the names of RASR's Python module ``librasr``.

RASR's pybind11 module offers ``librasr.AllophoneStateFsaBuilder(config)`` with ``build_by_segment_name(name)``,
``build_by_orthography(orthography)`` (each ``(num_states, num_edges, edges uint32 (3*E,) = [all from, all to,
all emission labels], weights float32 (E,))``) and ``get_orthography_by_segment_name(name)``; its config is a
``librasr.Configuration`` filled by ``set_from_file(path)``. This module gives the same two classes over the
emulator: the builder answers exactly what an emulator child answers to ``export_allophone_state_fsa_by_*``,
because it asks the same object, the child's callback, built from the same options by the same host code, so no
child process is needed for automata. ``import sprint_control.emulator.builder as librasr`` runs code written
for RASR's module on the emulator.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import Any, Union

import numpy as np

from .args import Config, parse_args
from .callback import raise_fatal

__all__ = ["AllophoneStateFsaBuilder", "Configuration"]

FsaTuple = tuple[int, int, np.ndarray, np.ndarray]


class Configuration:
    """A RASR configuration as the emulator reads it: RASR-style arguments (``--*.key=value``) and config files.

    ``set_from_file(path)`` (``librasr.Configuration``'s method) adds a RASR config file, as ``--config=path``;
    ``set_from_args(args)`` adds arguments (a list, or one string split like a shell, as ``sprintConfigStr``).
    Later settings win over earlier ones, arguments over files.
    """

    def __init__(self, args: Union[str, Sequence[str], None] = None):
        self.args: list[str] = []
        if args is not None:
            self.set_from_args(args)

    def set_from_file(self, path: str) -> None:
        self.args.append(f"--config={path}")

    def set_from_args(self, args: Union[str, Sequence[str]]) -> None:
        self.args.extend(shlex.split(args) if isinstance(args, str) else [str(a) for a in args])

    def parsed(self) -> Config:
        return parse_args(self.args)


class AllophoneStateFsaBuilder:
    """``librasr.AllophoneStateFsaBuilder`` over the emulator's lexicon, corpus and criterion.

    :param config: a :class:`Configuration`, RASR-style arguments (a list or one string) or a parsed ``Config``:
        the options an emulator child would be started with (``corpus.*``, ``lexicon.*``, ``training-criterion``).
    """

    def __init__(self, config: Union[Configuration, Config, str, Sequence[str]]):
        if isinstance(config, Configuration):
            cfg = config.parsed()
        elif isinstance(config, Config):
            cfg = config
        elif isinstance(config, (str, list, tuple)):
            cfg = Configuration(config).parsed()
        else:
            raise TypeError(f"AllophoneStateFsaBuilder: config must be a Configuration, a Config or RASR-style "
                            f"arguments (str or list), got {type(config).__name__}")
        self._setup(cfg)

    def _setup(self, cfg: Config) -> None:
        from .host import Host  # the host builds lexicon, corpus and callback as the child's run does

        self._config = cfg
        self._callback = Host(cfg, on_fatal=raise_fatal).callback

    def build_by_segment_name(self, segment_name: str) -> FsaTuple:
        """The automaton of a corpus segment (KeyError for a name not in the corpus)."""
        return self._callback("export_allophone_state_fsa_by_segment_name", segment_name)

    def build_by_orthography(self, orthography: str) -> FsaTuple:
        """The automaton of an orthography (ValueError for a symbol outside the lexicon)."""
        return self._callback("export_allophone_state_fsa_by_orthography", orthography)

    def get_orthography_by_segment_name(self, segment_name: str) -> str:
        return self._callback("get_orthography_by_segment_name", segment_name)

    @property
    def segment_names(self) -> list[str]:
        """The corpus's segment names in corpus order (the emulator's addition: librasr has no such list)."""
        return list(self._callback.corpus.names)

    def __getstate__(self) -> Any:  # the options travel; the copy builds its own lexicon and corpus
        return {"config": self._config}

    def __setstate__(self, state: Any) -> None:
        self._setup(state["config"])
