"""What the tests share besides fixtures: archives, clients, kernels, a Jupyter server, a Ray
cluster, and the real TorchServe as the reference."""
