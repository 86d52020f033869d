"""Peer servers side by side with gpuserve: Triton (pytriton), MLServer, KServe. Each module has a
driver (runs in the benchmark Python) and a server script (runs in the peer's own venv under .peers/)."""
