import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tiny models run fastest single-threaded, and the suite stays steady on a loaded 2-core machine."""
    torch.set_num_threads(1)
    yield
