"""Suite-wide settings: one torch thread (the tests use tiny tensors, for which thread
start-up costs more than it saves, and the CI machine has only 2 cores)."""

import torch

torch.set_num_threads(1)
