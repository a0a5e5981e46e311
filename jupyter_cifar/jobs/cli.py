"""``jupyter cifar train --detach`` and ``jupyter cifar jobs …``: training jobs from a terminal.

``--detach`` queues the training on a Jupyter server (``--store http(s)://…``, or the server of the
kernel this runs in) and returns at once; ``jobs watch`` follows a job to its end (a bar on a terminal,
JSON lines of its events with ``--json``) and exits 0 when it finished, 1 when it stopped, failed or was
interrupted. ``jobs`` also works on a folder or ``mongodb://`` store, where jobs are kept.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..cli_common import ProgressBar, add_json_arg, add_store_arg, count
from ..errors import BadParameter
from .records import STATES, describe_spec, describe_worker

WATCH_POLL_SECONDS = 10  # each long poll waits this long for an event at most


def add_parser(sub: Any) -> None:
    jobs = sub.add_parser("jobs", help="training jobs a Jupyter server runs (see train --detach)")
    verbs = jobs.add_subparsers(dest="verb", metavar="VERB", parser_class=type(jobs))
    verbs.required = True

    def verb(name: str, help: str, with_id: bool = True) -> argparse.ArgumentParser:
        p = verbs.add_parser(name, help=help)
        if with_id:
            p.add_argument("job", metavar="ID", help="a job's id (jobs list shows them)")
        add_store_arg(p)
        add_json_arg(p)
        return p

    p = verb("list", "the jobs, newest first", with_id=False)
    p.add_argument("--state", action="append", default=[], choices=STATES, help="only these (repeatable)")
    p.add_argument("--limit", type=count, default=50, metavar="N", help="at most N jobs (default: 50)")
    verb("show", "one job")
    verb("watch", "follow a job's progress to its end (exit 0: finished; 1: stopped, failed, interrupted)")
    verb("stop", "stop a job: a queued one at once, a running one after its current batch")
    verb("resume", "queue an interrupted, stopped or failed job again, from its last checkpoint")
    verb("delete", "delete a job that is not running: its record, events and checkpoint (never its model)")


def detach(args: argparse.Namespace, out: Any, tags: dict[str, str]) -> int:
    """``train --detach``: queue the training as a job on the server; print its id and state."""
    from ..store import open_store
    from ..store.remote import RemoteModelStore
    from .client import open_jobs

    store = open_store(args.store)
    if not isinstance(store, RemoteModelStore):
        raise BadParameter(
            "--detach",
            f"jobs run on a Jupyter server with jupyter_cifar, and {store.display} is a store: give "
            "--store http(s)://HOST:PORT/?token=… (in a notebook's kernel, its server is the default)",
        )
    spec = {
        "preset": args.preset,
        "epochs": args.epochs,
        "minutes": args.minutes,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "train_limit": args.train_limit,
        "test_limit": args.test_limit,
        "seed": args.seed,
        "precision": args.precision,
        "data": args.data,  # as the server's machine sees it; none: the server's own
        "save": args.save,
        "tags": tags,
        "notes": args.notes,
    }
    client = open_jobs(store)
    try:
        job = client.submit({k: v for k, v in spec.items() if v is not None})
    finally:
        client.close()
    out.result(
        {"job": job["id"], "state": job["state"]},
        lambda r: f"job {r['job']} is {r['state']}: follow it with `jupyter cifar jobs watch {r['job']}`",
    )
    return 0


def run(args: argparse.Namespace, out: Any) -> int:
    from ..store import open_store
    from .client import open_jobs

    client = open_jobs(open_store(args.store))
    try:
        if args.verb == "list":
            items, total = client.list(args.state, limit=args.limit)
            out.result(items, lambda jobs: _table(jobs, total))
            return 0
        if args.verb == "watch":
            return _watch(client, args.job, out)
        act = {"show": client.get, "stop": client.stop, "resume": client.resume, "delete": client.delete}
        job = act[args.verb](args.job)
        out.result(job, _line)
        return 0
    finally:
        client.close()


def _watch(client: Any, job_id: str, out: Any) -> int:
    """Events until the job ends: JSON lines on stdout with --json, else a bar (or lines) on stderr."""
    from .follow import follow

    client.get(job_id)  # an unknown id is an error before anything is drawn
    with ProgressBar(out) as bar:
        for event in follow(client, job_id, wait=WATCH_POLL_SECONDS):
            if out.as_json:
                sys.stdout.write(json.dumps(event) + "\n")
                sys.stdout.flush()
            else:
                bar.on_event(event)
    job = client.get(job_id)
    if not out.as_json:
        print(_line(job))
    return 0 if job["state"] == "finished" else 1


def _line(job: dict[str, Any]) -> str:
    result = ""
    if job["model"]:
        result = f" -> {job['model']}" + (
            f" (test accuracy {job['test_accuracy']:.4f})" if job["test_accuracy"] is not None else ""
        )
    progress = f" {job['progress']:.0%}" if job["state"] in ("running", "stopping") else ""
    error = f": {job['error']}" if job["error"] else ""
    what = f"{describe_spec(job['spec'])}, created {job['created'][:19]}"
    where = describe_worker(job.get("worker"))  # its worker's host and machine, once one claimed it
    what += f", {where}" if where else ""
    return f"{job['id']}  {job['state']}{progress}  {what}{result}{error}"


def _table(jobs: list[dict[str, Any]], total: int) -> str:
    if not jobs:
        return "no jobs"
    return "\n".join([*(_line(j) for j in jobs), f"({len(jobs)} of {total})"])
