"""Joining or starting Ray, importing no torch: the CLI starts it in the background as soon as
``--engine ray`` is known, so Ray's start-up (a few seconds: its head processes) overlaps the
scan's own start (importing torch, loading the encoder and the calibration bundle, finding the
images) instead of following it.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import Future
from typing import Any

from auditmi.errors import InputError

_lock = threading.Lock()
_pending: Future[bool] | None = None


def import_ray() -> Any:
    """The ``ray`` module with Ray Data, or an InputError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise InputError("--engine ray needs Ray Data: pip install 'auditmi[ray]' (ray[data] and pyarrow), or use --engine local.") from e
    return ray


def _connect_now() -> bool:
    ray = import_ray()
    if ray.is_initialized():
        return False
    quiet = {"logging_level": logging.ERROR, "log_to_driver": False}
    # Ray's C++ core logs an error line per actor whose constructor arguments sit in the object
    # store (Ray Data always puts them there); real failures reach us as exceptions.
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    address = os.environ.get("RAY_ADDRESS")
    try:
        if address:
            ray.init(address=address, **quiet)
        else:
            # No dashboard, and no worker processes prestarted for the driver: on a small machine
            # they compete for the cores with Ray's own start-up (measured in benchmarks/RESULTS.md,
            # "Scale-out"); the pipeline's tasks and actors start the processes they need.
            ray.init(include_dashboard=False, _system_config={"prestart_worker_first_driver": False}, **quiet)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as e:
        where = f"the Ray cluster at RAY_ADDRESS={address}" if address else "a local Ray"
        raise InputError(f"cannot start or reach {where} ({e}). Check the address and that the cluster runs, "
                         "or unset RAY_ADDRESS to start Ray on this machine.") from e
    return True


def start_connecting() -> None:
    """Begin :func:`connect` in a background thread (idempotent); :func:`connect` then waits for
    it and raises its error, if any. Nothing else in the process may use Ray meanwhile."""
    global _pending
    with _lock:
        if _pending is not None:
            return
        fut: Future[bool] = Future()

        def run() -> None:
            try:
                started = _connect_now()
            except BaseException as e:  # handed to connect(), which raises it in the caller's thread
                fut.set_exception(e)
                return
            fut.set_result(started)
            if started:
                # A local Ray's head processes die with the THREAD that started them (Linux
                # PR_SET_PDEATHSIG), so this one stays parked until the process exits.
                threading.Event().wait()

        _pending = fut
        threading.Thread(target=run, name="auditmi-ray-connect", daemon=True).start()


def connect() -> bool:
    """Connect to the cluster at ``$RAY_ADDRESS``, or start a Ray on this machine.

    Returns True when this process initialised Ray. A Ray already initialised in this process (a
    notebook, the tests, an earlier stage of the same job) is used as it is; Ray shuts down
    when the process exits (``ray.shutdown()`` stops it earlier). Waits for a start begun by
    :func:`start_connecting`.
    """
    global _pending
    with _lock:
        fut, _pending = _pending, None
    if fut is not None:
        return fut.result()
    return _connect_now()


__all__ = ["connect", "import_ray", "start_connecting"]
