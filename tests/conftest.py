"""Shared test set-up."""

import os
import tempfile

import torch

# Teacher-output caches built by tests go to a throw-away directory, not the user's ~/.cache.
os.environ.setdefault("DISTIL_CACHE_DIR", tempfile.mkdtemp(prefix="distil-test-cache-"))

# Tiny models gain nothing from intra-op threads, and two OpenMP threads competing with any other
# process on a 2-core machine slow a step down a hundredfold: one thread keeps tests fast and steady.
torch.set_num_threads(1)
