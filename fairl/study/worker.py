"""A worker process of `fairl study run --workers K`: runs trials until the study's count."""

from __future__ import annotations

import json
import os
import signal
import sys

from fairl.outage import StoreUnreachable
from fairl.process import die_with_parent, interrupt_on_sigterm, skip_exit_collection
from fairl.study.runner import WorkerContext, work


def main() -> None:
    """Entry of a worker process: `python -P -c ... <context json>`."""
    die_with_parent()
    context = WorkerContext(**json.loads(sys.argv[1]))
    import torch  # heavy (~2 s): only to split the cores among the workers

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // context.workers))

    with interrupt_on_sigterm(sigint=True) as signals:  # Ctrl-C reaches the workers too
        try:
            work(context)
            skip_exit_collection()
        except KeyboardInterrupt:
            sys.exit(128 + (signals[0] if signals else signal.SIGINT))
        except StoreUnreachable as error:  # its trial is left to the launcher's reap
            print(f"fairl: worker {context.worker_index}: store error: {error}", file=sys.stderr)
            sys.exit(3)
