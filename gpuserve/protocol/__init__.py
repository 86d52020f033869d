"""KServe's `kserve.protocol` paths, so code importing from them runs with the package name changed."""
