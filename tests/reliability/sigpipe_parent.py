"""A parent that runs with SIGPIPE at its default action (as many command-line tools set it), whose
child is killed while a segment is being written to it (the tests run it and read its output).

    python sigpipe_parent.py PROTOCOL

It starts one emulator child, stops it (SIGSTOP: it reads nothing, so the parent's write of a 64 MB
segment blocks on the full pipe), kills it 0.3 s later and prints what the write raised. A parent
killed by SIGPIPE prints nothing and ends with status -13.
"""

import os
import signal
import sys
import threading
import time

import numpy as np
from rel_helpers import EMULATOR_ARGS, FAULTY_MODULE, HERE, pythonpath

from sprint_control.errors import SprintChildError
from sprint_control.parent import SprintSubprocessInstance, emulator_command
from sprint_control.wire import framing


def main():
    protocol = int(sys.argv[1])
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    env = {**os.environ, "PYTHONPATH": pythonpath()}
    inst = SprintSubprocessInstance(emulator_command(), sprintConfigStr=EMULATOR_ARGS, module_name=FAULTY_MODULE,
                                    module_path=HERE, env=env, protocol=protocol)
    try:
        pid = inst.child_pid
        print(f"child {pid} framing {framing.IMPLEMENTATION} protocol {inst.protocol}", flush=True)
        os.kill(pid, signal.SIGSTOP)

        def killer():
            time.sleep(0.3)
            os.kill(pid, signal.SIGKILL)

        thread = threading.Thread(target=killer)
        thread.start()
        try:
            inst.get_loss_and_error_signal("synthetic/rec0000/seg", np.zeros((2000, 8000), np.float32))
            print("no error", flush=True)
        except SprintChildError as exc:
            print(f"raised {type(exc).__name__}: {str(exc).splitlines()[0]}", flush=True)
        thread.join()
        # the pipe works again after a restart, and a SIGPIPE left pending would kill us here
        inst.init()
        print(f"restarted {inst.child_pid}", flush=True)
    finally:
        inst.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
