"""Shared test set-up."""

import torch

# Tiny models gain nothing from intra-op threads, and two OpenMP threads competing with any other
# process on a 2-core machine slow a step down a hundredfold: one thread keeps tests fast and steady.
torch.set_num_threads(1)
