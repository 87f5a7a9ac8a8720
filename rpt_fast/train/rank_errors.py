"""One rank's failure ends every rank within seconds, with the same error.

Without this, an exception on one rank (typically in rank-0-only work: metrics, sealing a
checkpoint, creating the run folder) leaves the others waiting in their next collective until
the process group's timeout (30 minutes on NCCL and gloo). Here the failing rank publishes its
error in the rendezvous key-value store (the ``TCPStore`` rank 0 hosts at MASTER_ADDR:MASTER_PORT)
and every other rank runs a watchdog thread that polls that key once a second: on seeing it, the
rank prints the same one-line error and exits (``os._exit``: it may be blocked inside a
collective that can never finish). A rank that loses the store (rank 0 killed outright) exits
the same way, naming the lost contact. Collectives release the GIL, so the thread runs while
the main thread waits in one.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import sys
import threading
import time

from .distributed import DistInfo, all_gather_objects

FAILURE_KEY = "rpt-fast/failure"
ACK_KEY = "rpt-fast/failure-acks"
POLL_S = 1.0
ACK_WAIT_S = 15.0
EXIT_CODE = 1


def on_every_rank(exc: BaseException) -> BaseException:
    """Marks an error that every rank raises by itself (after a collective decision, e.g. a
    checkpoint verified by rank 0 and broadcast): nothing to propagate, each rank reports it."""
    exc.raised_on_every_rank = True
    return exc


def failure_on_any_rank(info: DistInfo, message: str | None) -> str | None:
    """Collective, around a check every rank runs by itself (the self-check, a resume's settings):
    each rank's failure (None: it passed) -> on every rank the lowest failing rank's message,
    naming the ranks where not all failed; None where all passed. Raise it marked
    :func:`on_every_rank`: one line per node and the error's exit code on every rank, where each
    rank's own exception would report itself as one rank's failure (and the others exit 1)."""
    failed = [(rank, text) for rank, text in enumerate(all_gather_objects(info, message)) if text is not None]
    if not failed:
        return None
    text = failed[0][1]
    if len(failed) < info.world_size:
        ranks = ", ".join(str(rank) for rank, _ in failed)
        text += f" (on rank{'s' if len(failed) > 1 else ''} {ranks} of {info.world_size})"
    return text


def _store():
    import torch.distributed as dist

    return dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                         timeout=datetime.timedelta(seconds=30))


def failure_line(rank: int, exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"rank {rank} failed: {type(exc).__name__}: {text[0] if text else ''}"


class _Watchdog(threading.Thread):
    def __init__(self, info: DistInfo):
        super().__init__(name="rpt-fast-failure-watchdog", daemon=True)
        self.info = info
        self.stopped = threading.Event()
        self.store = _store()

    def run(self) -> None:
        while not self.stopped.wait(POLL_S):
            try:
                failed = self.store.check([FAILURE_KEY])
                message = self.store.get(FAILURE_KEY).decode() if failed else None
            except Exception as exc:  # the store's host (rank 0) is gone
                if self.stopped.is_set():
                    return
                message = f"lost contact with rank 0 (MASTER_ADDR={os.environ.get('MASTER_ADDR')}): {exc}"
            if message is None:
                continue
            if self.stopped.is_set():
                return  # the failing rank is this one: it reports the error itself
            print(f"rpt-train: error: {message}", file=sys.stderr, flush=True)
            with contextlib.suppress(Exception):
                self.store.add(ACK_KEY, 1)
            os._exit(EXIT_CODE)


def _publish(info: DistInfo, exc: BaseException) -> None:
    """Puts this rank's error in the store and waits (bounded) until the other ranks saw it: the
    store lives in rank 0's process, so rank 0 must not exit before the others read it."""
    line = failure_line(info.rank, exc)
    print(f"rpt-train: error: {line}", file=sys.stderr, flush=True)
    try:
        store = _store()
        if store.add("rpt-fast/failure-claims", 1) == 1:  # the first failure is the one reported
            store.set(FAILURE_KEY, line)
        store.add(ACK_KEY, 1)  # every rank counts once: failed itself, or saw the failure
        deadline = time.monotonic() + ACK_WAIT_S
        while store.add(ACK_KEY, 0) < info.world_size and time.monotonic() < deadline:
            time.sleep(0.1)
    except Exception:  # the store is gone too: the other ranks' watchdogs notice that instead
        pass


@contextlib.contextmanager
def propagate(info: DistInfo):
    """Around a multi-rank run: an exception on this rank stops every rank; a failure elsewhere
    makes this one exit. Leave the block before the final barrier (the watchdog is stopped)."""
    if info.world_size == 1:
        yield
        return
    watchdog = _Watchdog(info)
    watchdog.start()
    try:
        yield
    except BaseException as exc:
        watchdog.stopped.set()
        clean_exit = isinstance(exc, SystemExit) and exc.code in (0, None)
        if not clean_exit and not getattr(exc, "raised_on_every_rank", False):
            _publish(info, exc)
        raise
    finally:
        watchdog.stopped.set()
        watchdog.join(timeout=2 * POLL_S)
