"""The worker that memorizes runs OpenBLAS on one thread (one-vector searches, no spinning)."""

from __future__ import annotations

import numpy as np
from threadpoolctl import ThreadpoolController, threadpool_limits

from agents.worker import one_blas_thread


def test_memorizing_worker_runs_openblas_on_one_thread() -> None:
    np.ones((2, 2)) @ np.ones(2)  # numpy's OpenBLAS is loaded
    with threadpool_limits(limits=2, user_api="blas"):  # restored on exit
        one_blas_thread()
        openblas = ThreadpoolController().select(internal_api="openblas").info()
        assert openblas
        assert all(lib["num_threads"] == 1 for lib in openblas)
