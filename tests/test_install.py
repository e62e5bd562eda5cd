"""The installed package works where it cannot write: a read-only site-packages and a home
folder that is not writable either (a shared installation used by another user)."""

import importlib

import numba

from sklearn_reclag.detectors import _sae_kernels


def test_sae_kernels_compile_without_a_disk_cache_where_numba_has_nowhere_to_write(
        monkeypatch):
    """numba raises "cannot cache function ...: no locator available" at import when
    ``cache=True`` finds no writable folder (checked by hand as a non-root user with the
    package in a read-only folder and an unwritable HOME: RecLag's sae fit failed with that
    RuntimeError). The kernels then compile without a cache. Simulated here: as root
    every folder is writable."""
    real_njit = numba.njit

    def njit_without_locator(*args, cache=False, **kwargs):
        if cache:
            raise RuntimeError("cannot cache function 'draws_and_weights': no locator "
                               "available for file '_sae_kernels.py'")
        return real_njit(*args, **kwargs)

    monkeypatch.setattr(numba, "njit", njit_without_locator)
    try:
        kernels = importlib.reload(_sae_kernels)
        for kernel in (kernels.draws_and_weights, kernels.adam_step):
            assert type(kernel._cache).__name__ == "NullCache"
    finally:
        monkeypatch.undo()
        kernels = importlib.reload(_sae_kernels)
    # Where numba can write, the kernels are cached on disk.
    assert type(kernels.draws_and_weights._cache).__name__ == "FunctionCache"
