"""`mlserver dockerfile FOLDER` and `mlserver build FOLDER -t TAG`: an image serving a model folder with gpuserve,
for MLServer users whose pipelines build their model images with these two commands.

MLServer's image starts from its own base image and installs the folder's requirements.txt (or conda
environment) into it; here the base is gpuserve's image (Dockerfile.cuda, built as `gpuserve:cuda`, or the image
`--base-image` / GPUSERVE_BASE_IMAGE names), the folder's requirements.txt is installed into gpuserve's own
environment, and the folder is served from /models by the base image's entry point. A conda environment file is
not turned into an environment here (MLServer's build runs conda-pack for it): its `environment_tarball`, packed
beforehand, is served as model-settings.json names it. Neither command's image was built on the project's machines
(no Docker engine there); the Dockerfile's text and the `docker build` line are what the tests check.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from typing import List

DEFAULT_BASE_IMAGE = "gpuserve:cuda"
DOCKERFILE = """\
# Written by `mlserver dockerfile` (gpuserve): the folder served by gpuserve's image.
ARG BASE_IMAGE={base_image}
FROM ${{BASE_IMAGE}}
COPY --chown=10001 . /models
USER root
# The folder's Python dependencies, into gpuserve's environment
RUN if [ -f /models/requirements.txt ]; then \\
        /opt/gpuserve/bin/pip install --no-cache-dir -r /models/requirements.txt; \\
    fi
USER gpuserve
ENV MLSERVER_MODELS_DIR=/models
"""
DOCKERIGNORE = """\
# Binaries and caches that need not reach the image
*.exe
*.dll
*.so
*.dylib
*.pyc
__pycache__/
.git/
.venv/
.envs/
Dockerfile
"""


def generate_dockerfile(base_image: str = "") -> str:
    return DOCKERFILE.format(base_image=base_image or os.environ.get("GPUSERVE_BASE_IMAGE", DEFAULT_BASE_IMAGE))


def write_dockerfile(folder: str, dockerfile: str, include_dockerignore: bool = True) -> str:
    path = os.path.join(folder, "Dockerfile")
    with open(path, "w") as out:
        out.write(dockerfile)
    if include_dockerignore:  # beside the Dockerfile, named for it, as docker build looks it up
        with open(path + ".dockerignore", "w") as out:
            out.write(DOCKERIGNORE)
    return path


def build_command(folder: str, dockerfile_path: str, tag: str, no_cache: bool = False) -> List[str]:
    return ["docker", "build", "--rm", *(["--no-cache"] if no_cache else []), folder, "-f", dockerfile_path,
            "-t", tag]


def build_image(folder: str, dockerfile: str, tag: str, no_cache: bool = False) -> str:
    """`docker build` of `folder` with `dockerfile` (written to a scratch folder, as MLServer's build does)."""
    with tempfile.TemporaryDirectory() as scratch:
        path = write_dockerfile(scratch, dockerfile)
        subprocess.run(build_command(folder, path, tag, no_cache), check=True,
                       env={**os.environ, "DOCKER_BUILDKIT": "1"})
    return tag
