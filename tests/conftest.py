import os

import pytest
import torch
from hypothesis import HealthCheck, settings

# Property tests draw the same examples on every run: CI results must repeat.
settings.register_profile(
    "kronbook",
    derandomize=True,
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "kronbook"))


@pytest.fixture(autouse=True)
def _fixed_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
