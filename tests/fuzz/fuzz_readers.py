"""Coverage-guided fuzzing of the two readers with atheris (libFuzzer for Python and extensions).

    pip install -e ".[fuzz]"
    python tests/fuzz/fuzz_readers.py -atheris_runs=200000 tests/fuzz/corpus

The first input byte picks the target: the compiled frame decoder, the pure-Python one, or the
safe v1 reader. Anything but ProtocolError/EOFError (or a crash of the interpreter) is a finding.
The golden fixtures in tests/wire/fixtures/ make a good seed corpus (copy them into the corpus folder).
"""

import sys

import atheris

with atheris.instrument_imports():
    from sprint_control.errors import ProtocolError
    from sprint_control.wire import _framing_py, protocol

    try:
        from sprint_control.wire import _framing
    except ImportError:  # pure-Python build
        _framing = None

TARGETS = [_framing_py.decode_frame, protocol.decode_v1]
if _framing is not None:
    TARGETS.append(_framing.decode_frame)


def test_one_input(data: bytes) -> None:
    if not data:
        return
    target = TARGETS[data[0] % len(TARGETS)]
    try:
        target(data[1:])
    except (ProtocolError, EOFError):
        pass


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
