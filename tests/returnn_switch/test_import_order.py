"""``install()`` works whatever was imported first: RETURNN's TF module ``returnn.tf.sprint`` (which
binds the pool's name at its import) imported before or after it, or through RETURNN's old-style
alias. Each case runs in a fresh interpreter, with a TensorFlow stand-in when TensorFlow is not
installed: RETURNN's ``py_get_sprint_loss_and_error_signal`` and ``py_get_sprint_automata_for_batch``,
the functions its TF ops wrap, run on numpy alone and are called as the ops call them."""

from __future__ import annotations

import pytest
from returnn_helpers import run_script, tensorflow_available
from support import extra_reason

pytest.importorskip("returnn.sprint.error_signals", reason=extra_reason("returnn.sprint.error_signals"))

SCRIPT = """
import json
import sys

import numpy as np
{before}
import sprint_control.returnn as bridge
bridge.install()
{after}
import returnn
import returnn.sprint.error_signals as es
import returnn.tf.sprint as tfs
from returnn_helpers import batch, check_automata, check_batch_result, sprint_opts

def holders():
    return {{"error_signals": es.SprintInstancePool.__name__, "tf.sprint": tfs.SprintInstancePool.__name__,
             "TFSprint": returnn.TFSprint.SprintInstancePool.__name__}}

during = holders()
log_post, lengths, tags = batch()
loss, err = tfs.py_get_sprint_loss_and_error_signal(sprint_opts(), log_post, lengths, tags)
check_batch_result(log_post, lengths, loss, err)
edges, weights, start_end = tfs.py_get_sprint_automata_for_batch(sprint_opts(), [t.encode() for t in tags])
assert edges.dtype == np.int32 and start_end.dtype == np.int32  # RETURNN's casts for TF
check_automata(edges.astype(np.uint32), weights, start_end.astype(np.uint32))
pool = tfs.SprintInstancePool.get_global_instance(sprint_opts())
protocol = pool.protocol
bridge.uninstall()
print(json.dumps({{"during": during, "after": holders(), "protocol": protocol, "closed": pool.closed,
                  "tf": sys.modules["tensorflow"].__version__}}))
"""

ORDERS = {
    "tf-module-first": ("import returnn.tf.sprint", ""),
    "install-first": ("", "import returnn.tf.sprint"),
    "old-style-alias-first": ("import returnn.TFSprint; returnn.TFSprint.SprintInstancePool", ""),
    "pool-module-only-first": ("import returnn.sprint.error_signals", ""),
}


@pytest.mark.parametrize("order", sorted(ORDERS))
def test_install_whatever_was_imported_first(order):
    before, after = ORDERS[order]
    res = run_script(SCRIPT.format(before=before, after=after), stub_tf=not tensorflow_available())
    assert res["during"] == dict.fromkeys(("error_signals", "tf.sprint", "TFSprint"), "ReturnnInstancePool")
    assert res["after"] == dict.fromkeys(("error_signals", "tf.sprint", "TFSprint"), "SprintInstancePool")
    assert res["protocol"] == 2 and res["closed"]
    if not tensorflow_available():
        assert res["tf"].endswith("-stub")


RELOAD_SCRIPT = """
import importlib
import inspect
import json
import sys

import sprint_control.returnn as bridge

bridge.install()
import returnn.sprint.error_signals as es
importlib.reload(es)                       # RETURNN's module executed again: defines its class anew
reloaded = es.SprintInstancePool.__name__
for name in ("returnn.sprint.error_signals", "returnn.tf.sprint"):
    sys.modules.pop(name, None)            # dropped, then imported afresh (through RETURNN's TF module)
import returnn.tf.sprint as tfs
fresh = [tfs.SprintInstancePool.__name__, sys.modules["returnn.sprint.error_signals"].SprintInstancePool.__name__]
source_ok = "class SprintInstancePool" in inspect.getsource(sys.modules["returnn.sprint.error_signals"])
bridge.uninstall()
after = [tfs.SprintInstancePool, sys.modules["returnn.sprint.error_signals"].SprintInstancePool]
print(json.dumps({"reloaded": reloaded, "fresh": fresh, "source_ok": source_ok,
                  "after": [c.__module__ + "." + c.__name__ for c in after], "same": after[0] is after[1],
                  "hook_gone": not any(type(f).__name__ == "_Finder" for f in sys.meta_path)}))
"""


def test_install_survives_reload_and_fresh_import_of_returnns_pool_module():
    res = run_script(RELOAD_SCRIPT, stub_tf=not tensorflow_available())
    assert res["reloaded"] == "ReturnnInstancePool"
    assert res["fresh"] == ["ReturnnInstancePool", "ReturnnInstancePool"]
    assert res["source_ok"]  # the wrapped loader still serves the module's source
    assert res["after"] == ["returnn.sprint.error_signals.SprintInstancePool"] * 2 and res["same"]
    assert res["hook_gone"]
