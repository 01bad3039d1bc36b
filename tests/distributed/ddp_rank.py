"""One rank of the torch.distributed recipe of docs/distributed.md, run as its own process by
test_ddp.py: ``python ddp_rank.py RANK WORLD PORT OUTDIR MODE``.

Each rank owns its own SprintPool (one emulator child, over shared memory), trains a linear model a few
steps with ``sprint_loss`` under DistributedDataParallel (gloo, CPU), and writes what the test checks to
OUTDIR/rank{RANK}.json. The recipe's one rule: every rank computes its Sprint loss, then all ranks agree
(one all-reduce) before any of them calls backward, so one rank's failure stops all of them with an
error instead of leaving the others waiting in the gradient all-reduce.

MODE ``train``: three steps; besides, the all-reduced gradient is checked against the average of the
ranks' own gradients, gathered by hand. MODE ``fail``: rank 1's Sprint child is killed before step 1
(``restart_dead`` off, so it stays dead).
"""

from __future__ import annotations

import copy
import datetime
import json
import os
import signal
import sys

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from sprint_control import SprintControlError
from sprint_control.emulator import criteria
from sprint_control.emulator.corpus import synthetic_corpus
from sprint_control.parent import SprintPool
from sprint_control.torch import sprint_loss

N_SEGMENTS = 12
SEED = 7
CORPUS = synthetic_corpus(N_SEGMENTS, seed=SEED, min_frames=10, max_frames=30, max_symbols=3)
ARGS = [f"--*.corpus.synthetic={N_SEGMENTS}", f"--*.corpus.seed={SEED}", "--*.corpus.min-frames=10",
        "--*.corpus.max-frames=30", "--*.corpus.max-symbols=3", "--*.training-criterion=ctc", "--*.log-level=warning"]
STEPS = 3
BATCH = 2


def rank_batch(rank: int, world: int, step: int):
    """This rank's shard of the step's batch: features (T, B, F), lengths, tags."""
    first = (step * world + rank) * BATCH % N_SEGMENTS
    segs = [CORPUS.segments[(first + i) % N_SEGMENTS] for i in range(BATCH)]
    lens = [s.num_frames for s in segs]
    feats = np.zeros((max(lens), len(segs), CORPUS.feature_dim), np.float32)
    for b, s in enumerate(segs):
        feats[: s.num_frames, b] = s.features
    return torch.from_numpy(feats), lens, [s.name for s in segs]


def agree(ok: bool, rank: int, world: int) -> list[int]:
    """The ranks whose Sprint loss failed this step (the same list on every rank)."""
    failed = torch.zeros(world)
    failed[rank] = 0.0 if ok else 1.0
    dist.all_reduce(failed)
    return [r for r in range(world) if failed[r] > 0]


def main(rank: int, world: int, port: int, outdir: str, mode: str) -> int:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # gloo binds the hostname's interface otherwise
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=60))
    torch.manual_seed(0)
    model = torch.nn.Linear(CORPUS.feature_dim, criteria.num_labels("ctc"))
    ddp = DistributedDataParallel(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.05)
    report: dict = {"rank": rank, "pid": os.getpid(), "losses": [], "grad_diff": []}
    try:
        with SprintPool(1, sprint_args=ARGS, timeout=60, shm=True, restart_dead=mode != "fail") as pool:
            report["child_pid"] = pool.instances[0].child_pid
            report["uses_shared_memory"] = pool.uses_shared_memory
            for step in range(STEPS):
                if mode == "fail" and rank == 1 and step == 1:
                    os.kill(pool.instances[0].child_pid, signal.SIGKILL)
                feats, lens, tags = rank_batch(rank, world, step)
                error = None
                try:
                    loss = sprint_loss(ddp(feats), lens, tags, pool).sum() / len(tags)
                except SprintControlError as exc:
                    error = exc
                failed = agree(error is None, rank, world)
                if error is not None:
                    raise error  # this rank's own failure, as the pool raised it
                if failed:
                    raise RuntimeError(f"rank {rank}: the Sprint loss failed on rank(s) {failed} at step {step};"
                                       " all ranks stop together")
                # the same gradient by hand: this rank's own, averaged over the ranks with all_gather
                local = copy.deepcopy(model)
                own = sprint_loss(local(feats), lens, tags, pool).sum() / len(tags)
                own.backward()
                mine = torch.cat([p.grad.flatten() for p in local.parameters()])
                gathered = [torch.empty_like(mine) for _ in range(world)]
                dist.all_gather(gathered, mine)
                expected = torch.stack(gathered).mean(0)
                opt.zero_grad()
                loss.backward()  # DDP all-reduces here
                got = torch.cat([p.grad.flatten() for p in model.parameters()])
                report["grad_diff"].append(float((got - expected).abs().max() / expected.abs().max()))
                report["losses"].append(float(loss))
                opt.step()
            report["params"] = [p.detach().flatten().tolist() for p in model.parameters()]
    except Exception as exc:  # what the rank ends on, for the test to read
        report["error"] = {"type": type(exc).__name__, "message": str(exc)}
        raise
    finally:
        with open(os.path.join(outdir, f"rank{rank}.json"), "w") as f:
            json.dump(report, f)
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    rank_, world_, port_, outdir_, mode_ = sys.argv[1:6]
    sys.exit(main(int(rank_), int(world_), int(port_), outdir_, mode_))
