"""``sprint-control demo``: trains a tiny acoustic model with the criterion computed "inside Sprint".

No data and no RASR needed: a pool of emulator children (``python -m sprint_control.emulator``)
plays RASR, both sides generate the same synthetic corpus from the seed (or read the same corpus
and lexicon: a user's Bliss corpus and lexicon with ``--corpus``/``--lexicon``, or a RASR config
with ``--config``; the emulator generates features from the seed), and the parent trains
features -> linear -> log-softmax with plain SGD. Per batch the parent sends the log-posteriors
(time, batch, label) to the pool; Sprint's criterion (CTC or an HMM full-sum over the segment's
orthography) answers with losses and the error signal d loss / d activations, from which the
parent takes the gradient of the linear layer: ``dW = sum_b features_b^T @ error_signal_b``.

``run_demo`` returns the per-epoch figures (``DemoReport``); ``main`` is the console command.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shlex
import sys
import time
from collections.abc import Sequence
from typing import Optional, TextIO

import numpy as np

from ..parent import SprintPool
from ..parent.options import checked_seconds
from . import plot

logger = logging.getLogger("sprint_control.tools.demo")
#: Seconds the demo waits for each answer of a child: a stuck child ends the demo instead of hanging it.
DEFAULT_TIMEOUT = 120.0

CRITERIA = ("ctc", "fsa")


class DemoInputError(ValueError):
    """A user's corpus, lexicon or config the demo cannot train on (one line, naming the file)."""


@dataclasses.dataclass
class EpochStats:
    """Figures of one epoch. ``loss_per_frame`` averages Sprint's summed segment losses over the
    frames of the segments it did not skip."""

    epoch: int
    loss_per_frame: float
    segments: int
    skipped: int
    frames: int
    seconds: float
    sprint_seconds: float
    mb_moved: float
    protocol: int

    @property
    def segments_per_second(self) -> float:
        return self.segments / self.seconds if self.seconds > 0 else float("inf")

    @property
    def mb_per_second(self) -> float:
        """Array bytes over the pipes per second of time spent waiting for Sprint."""
        return self.mb_moved / self.sprint_seconds if self.sprint_seconds > 0 else float("inf")


@dataclasses.dataclass
class DemoReport:
    epochs: list[EpochStats]
    instances: int
    criterion: str
    num_labels: int
    feature_dim: int
    num_segments: int
    sprint_command: str

    @property
    def losses(self) -> list[float]:
        return [e.loss_per_frame for e in self.epochs]

    @property
    def loss_fell(self) -> bool:
        return len(self.epochs) >= 2 and self.losses[-1] < self.losses[0]


def _log_softmax(a: np.ndarray) -> np.ndarray:
    m = a.max(axis=-1, keepdims=True)
    z = a - m
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _batches(order: np.ndarray, batch_size: int):
    for i in range(0, len(order), batch_size):
        yield order[i : i + batch_size]


def _user_corpus(corpus: Optional[str], lexicon: Optional[str], config: Optional[str], seed: int,
                 sprint_args: Sequence[str]):
    """``(emulator arguments, corpus, lexicon)`` of a user's corpus and lexicon files or RASR config,
    read here as the emulator children read them."""
    from ..emulator.args import parse_args
    from ..emulator.host import corpus_from_config, lexicon_from_config

    argv = [f"--config={config}"] if config else []
    if corpus:
        argv.append(f"--*.corpus.file={corpus}")
    if lexicon:
        argv.append(f"--*.model-combination.lexicon.file={lexicon}")
    argv.append(f"--*.corpus.seed={seed}")
    try:
        cfg = parse_args(argv + list(sprint_args))
        if not cfg["corpus.file"]:
            raise DemoInputError("a corpus is needed: give --corpus, or a --config that sets corpus.file")
        lex = lexicon_from_config(cfg)
        return argv, corpus_from_config(cfg, lex), lex
    except OSError as exc:
        raise DemoInputError(f"{exc.filename}: {exc.strerror}") from None
    except DemoInputError:
        raise
    except ValueError as exc:
        raise DemoInputError(str(exc)) from None


def _trainable(segs: list, criterion: str, lexicon, say) -> list:
    """The segments the criterion can train on: frames, and an automaton the lexicon can build (RASR
    fails a segment whose orthography gives an empty graph; the demo leaves it out)."""
    from ..emulator import criteria

    keep, left_out = [], []
    for s in segs:
        try:
            if s.num_frames > 0:
                criteria.automaton(criterion, s.orthography, lexicon)
                keep.append(s)
                continue
        except ValueError as exc:
            left_out.append(f"{s.name}: {exc}")
            continue
        left_out.append(f"{s.name}: no frames")
    if left_out:
        say(f"left out {len(left_out)} segments (first: {left_out[0]})")
    return keep


def run_demo(
    *,
    instances: int = 2,
    segments: Optional[int] = 500,
    epochs: int = 5,
    criterion: str = "ctc",
    protocol: int = 2,
    sprint_exec: Optional[str] = None,
    sprint_args: Sequence[str] = (),
    num_labels: Optional[int] = None,
    seed: int = 0,
    lr: float = 0.5,
    batch_size: int = 16,
    progress: bool = True,
    out: Optional[TextIO] = None,
    timeout: Optional[float] = DEFAULT_TIMEOUT,
    shm: bool = False,
    corpus: Optional[str] = None,
    lexicon: Optional[str] = None,
    config: Optional[str] = None,
) -> DemoReport:
    """Trains the demo model; prints per-epoch lines and a summary to ``out`` (None: silent).
    ``corpus``/``lexicon``/``config``: train on a user's corpus (Bliss XML, text or JSON) and Bliss
    lexicon, or on what a RASR config names (``corpus.file``, ``model-combination.lexicon.file``,
    ``corpus.segments.file``, ``hmm.states-per-phone``, ...); ``segments`` then caps the segments
    taken (None: all), else it is the synthetic corpus's size (None: 500)."""
    from ..emulator import criteria
    from ..emulator.corpus import synthetic_corpus

    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    user = bool(corpus or lexicon or config)
    if segments is None:
        segments = 0 if user else 500
    if (segments < 1 and not user) or segments < 0 or epochs < 1 or batch_size < 1 or instances < 1:
        raise ValueError("segments, epochs, batch size and instances must all be at least 1")

    def say(text: str = "") -> None:
        if out is not None:
            print(text, file=out, flush=True)

    args: list[str] = []
    if user:
        corpus_args, the_corpus, lex = _user_corpus(corpus, lexicon, config, seed, sprint_args)
        segs = _trainable(the_corpus.segments, criterion, lex, say)
        if segments:
            segs = segs[:segments]
        if not segs:
            raise DemoInputError(f"corpus {the_corpus.name!r} has no segment the {criterion} criterion can train on")
        labels = int(num_labels) if num_labels else criteria.num_labels(criterion, lex)
        feat_dim = the_corpus.feature_dim
        what = f"{len(segs)} segments of corpus {the_corpus.name!r}"
        if sprint_exec is None:
            args += corpus_args + [f"--*.training-criterion={criterion}", "--*.log-level=warning"]
    else:
        the_corpus = synthetic_corpus(segments, seed=seed)
        labels = int(num_labels) if num_labels else criteria.num_labels(criterion)
        feat_dim = the_corpus.feature_dim
        segs = the_corpus.segments
        what = f"{segments} synthetic segments"
        if sprint_exec is None:
            # the emulator generates the same corpus from the same seed and computes the criterion
            args += [
                f"--*.corpus.synthetic={segments}",
                f"--*.corpus.seed={seed}",
                f"--*.training-criterion={criterion}",
                "--*.log-level=warning",
            ]
    args += [
        "--*.action=python-control",
        "--*.python-control-loop-type=python-control-loop",
        "--*.input-in-log-space=true",
    ]
    args += list(sprint_args)

    rng = np.random.default_rng([seed, 7])
    W = (rng.standard_normal((feat_dim, labels)) * 0.01).astype(np.float32)
    b = np.zeros((labels,), dtype=np.float32)
    stats: list[EpochStats] = []

    with SprintPool(instances, sprint_exec, args, protocol=protocol, timeout=timeout, shm=shm) as pool:
        command = sprint_exec or "python -m sprint_control.emulator"
        transport = " over shared memory" if pool.uses_shared_memory else ""
        say(f"sprint-control demo: {what}, {labels} labels ({criterion}),"
            f" features {feat_dim}, {instances} Sprint children ({command}), protocol v{pool.protocol}{transport}")
        for epoch in range(1, epochs + 1):
            order = rng.permutation(len(segs))
            started = time.perf_counter()
            sprint_seconds = 0.0
            bytes_before = pool.bytes_moved
            loss_sum = 0.0
            frames = 0
            skipped = 0
            bar = None
            if progress and out is not None:
                from tqdm import tqdm

                bar = tqdm(total=len(segs), desc=f"epoch {epoch}/{epochs}", unit="seg", file=out,
                           leave=False, dynamic_ncols=True)
            try:
                for idxs in _batches(order, batch_size):
                    batch = [segs[i] for i in idxs]
                    lengths = np.array([s.num_frames for s in batch], dtype=np.int64)
                    t_max = int(lengths.max())
                    feats = np.zeros((t_max, len(batch), feat_dim), dtype=np.float32)
                    for j, s in enumerate(batch):
                        feats[: s.num_frames, j] = s.features
                    log_post = _log_softmax(feats @ W + b)
                    if shm:  # the batch lives in the shared region: the children read it in place
                        shared = pool.empty(log_post.shape)
                        np.copyto(shared, log_post)
                        log_post = shared
                    t0 = time.perf_counter()
                    result = pool.compute(log_post, lengths, [s.name for s in batch])
                    sprint_seconds += time.perf_counter() - t0
                    ok = ~result.skipped
                    skipped += int((~ok).sum())
                    loss_sum += float(result.loss[ok].sum())
                    frames += int(lengths[ok].sum())
                    # skipped segments come back with a zero error signal: they add nothing
                    err = result.error_signal
                    n_frames = max(int(lengths[ok].sum()), 1)
                    grad_W = np.einsum("tbf,tbl->fl", feats, err, optimize=True) / n_frames
                    grad_b = err.sum(axis=(0, 1)) / n_frames
                    W -= lr * grad_W
                    b -= lr * grad_b
                    if bar is not None:
                        bar.update(len(batch))
                        bar.set_postfix(loss=f"{loss_sum / max(frames, 1):.3f}")
            finally:
                if bar is not None:
                    bar.close()
            seconds = time.perf_counter() - started
            e = EpochStats(
                epoch=epoch,
                loss_per_frame=loss_sum / max(frames, 1),
                segments=len(segs),
                skipped=skipped,
                frames=frames,
                seconds=seconds,
                sprint_seconds=sprint_seconds,
                mb_moved=(pool.bytes_moved - bytes_before) / 1e6,
                protocol=pool.protocol or 1,
            )
            stats.append(e)
            say(f"epoch {epoch}: loss/frame {e.loss_per_frame:.4f}  {e.segments_per_second:7.1f} seg/s"
                f"  {e.mb_per_second:7.1f} MB/s ({e.mb_moved:.1f} MB)  protocol v{e.protocol}"
                + (f"  skipped {e.skipped}" if e.skipped else ""))
        report = DemoReport(stats, instances, criterion, labels, feat_dim, len(segs), command)

    say()
    say(format_summary(report))
    return report


def format_summary(report: DemoReport) -> str:
    """The summary table printed at the end of the demo."""
    head = ("epoch", "loss/frame", "skipped", "seg/s", "MB/s", "MB", "seconds", "protocol")
    rows = [
        (str(e.epoch), f"{e.loss_per_frame:.4f}", str(e.skipped), f"{e.segments_per_second:.1f}",
         f"{e.mb_per_second:.1f}", f"{e.mb_moved:.1f}", f"{e.seconds:.2f}", f"v{e.protocol}")
        for e in report.epochs
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    line = "-+-".join("-" * w for w in widths)
    fmt = " | ".join("{:>" + str(w) + "}" for w in widths)
    out = [fmt.format(*head), line] + [fmt.format(*r) for r in rows]
    if report.epochs:
        first, last = report.losses[0], report.losses[-1]
        verdict = "fell" if last < first else "did NOT fall"
        out.append("")
        out.append(f"loss {verdict}: {first:.4f} -> {last:.4f} over {len(report.epochs)} epochs"
                   f" ({report.instances} Sprint children, criterion {report.criterion})")
    return "\n".join(out)


def _positive_seconds(text: str) -> float:
    """argparse type of --timeout: a positive number (0 or less would time out every request)."""
    try:
        return checked_seconds("--timeout", text, allow_none=False)  # type: ignore[return-value]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser(parser: Optional[argparse.ArgumentParser] = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser(prog="sprint-control demo")
    p.description = ("Train a tiny acoustic model with the loss and error signal computed inside Sprint"
                     " (the bundled RASR emulator unless --sprint-exec is given).")
    p.add_argument("--instances", type=int, default=2, help="number of Sprint children (default 2)")
    p.add_argument("--segments", type=int, default=None,
                   help="synthetic corpus size (default 500); with --corpus/--config: take at most this many"
                        " segments (default all)")
    p.add_argument("--epochs", type=int, default=5, help="training epochs (default 5)")
    p.add_argument("--criterion", choices=CRITERIA, default="ctc", help="Sprint's training criterion")
    p.add_argument("--protocol", type=int, choices=(1, 2), default=2,
                   help="wire protocol: 2 (binary, default; falls back to 1 if the child lacks it) or 1")
    p.add_argument("--sprint-exec", metavar="PATH", default=None,
                   help="a real RASR nn-trainer instead of the emulator (its corpus must hold the"
                        " synthetic segments; see --sprint-args)")
    p.add_argument("--sprint-args", metavar="ARGS", default="",
                   help="extra Sprint arguments, split like a shell (e.g. '--config=train.config')")
    p.add_argument("--num-labels", type=int, default=None,
                   help="label count of the model (default: what the emulator's criterion uses)")
    p.add_argument("--seed", type=int, default=0, help="seed of the corpus and the model (default 0)")
    p.add_argument("--lr", type=float, default=0.5, help="SGD learning rate (default 0.5)")
    p.add_argument("--batch-size", type=int, default=16, help="segments per batch (default 16)")
    p.add_argument("--corpus", metavar="FILE", default=None,
                   help="train on this corpus (Bliss XML, .xml.gz, text or JSON) instead of a synthetic one")
    p.add_argument("--lexicon", metavar="FILE", default=None,
                   help="the Bliss lexicon of --corpus (default: the emulator's built-in alphabet)")
    p.add_argument("--config", metavar="FILE", default=None,
                   help="a RASR config naming the corpus, lexicon, segment list and HMM settings (its keys"
                        " as RASR reads them; --corpus/--lexicon override it)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--shm", action="store_true",
                   help="move the matrices through shared memory instead of the pipes (protocol 2 only)")
    p.add_argument("--timeout", type=_positive_seconds, default=DEFAULT_TIMEOUT,
                   help="seconds to wait for each answer of a child (default %(default)s)")
    plot.add_plot_option(p, "loss per frame and seg/s per epoch")
    return p


def main(argv: Optional[Sequence[str]] = None, out: Optional[TextIO] = None) -> int:
    args = build_parser().parse_args(argv)
    return run_from_args(args, out=out)


def run_from_args(args: argparse.Namespace, out: Optional[TextIO] = None) -> int:
    out = out if out is not None else sys.stdout
    report = run_demo(
        instances=args.instances, segments=args.segments, epochs=args.epochs, criterion=args.criterion,
        protocol=args.protocol, sprint_exec=args.sprint_exec, sprint_args=shlex.split(args.sprint_args),
        num_labels=args.num_labels, seed=args.seed, lr=args.lr, batch_size=args.batch_size,
        progress=not args.no_progress, out=out, timeout=args.timeout, shm=args.shm,
        corpus=args.corpus, lexicon=args.lexicon, config=args.config,
    )
    if getattr(args, "plot", None):
        plot.plot_demo(report, args.plot)
        print(f"plot written to {args.plot}", file=out)
    return 0 if report.loss_fell or len(report.epochs) < 2 else 1
