"""Test-wide settings."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _single_thread():
    # CI and development machines have 2 cores shared with other jobs; there, 2 intra-op threads
    # waiting on each other made float64 elementwise work ~10x slower than 1 thread (measured).
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def zoo() -> dict[str, torch.nn.Module]:
    """The five published baseline dehazers, built once (MSBDN alone has 31 M parameters)."""
    from hazefree import models

    torch.manual_seed(0)
    return {name: models.create(name) for name in ("aod-net", "dehazenet", "griddehazenet", "msbdn", "ffa-net")}
