import torch

# two shared CPU cores: keep torch single-threaded so parallel test runs do not oversubscribe
torch.set_num_threads(1)
