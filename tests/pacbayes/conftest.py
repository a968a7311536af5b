"""Shared settings for the PAC-Bayes tests: single-threaded torch (2 shared cores), float64."""

import torch

torch.set_num_threads(1)
