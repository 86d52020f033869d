#!/bin/sh
# The CUDA image's entry point (Dockerfile.cuda; tests/test_dockerfile.py runs it here).
#   docker run IMAGE                          -> gpuserve start /models with the image's CMD (its ports)
#   docker run IMAGE --http-port 9000 ...     -> the same with these flags
#   docker run IMAGE serve                    -> SageMaker's start (gpuserve/sagemaker_serve.py)
#   docker run IMAGE tritonserver --model-repository=/models ...   (a Triton manifest's command, unchanged)
#   docker run IMAGE gpuserve start ...       -> as written
case "${1:-}" in
    serve) shift; exec serve "$@" ;;
    tritonserver|gpuserve) exec "$@" ;;
esac
exec gpuserve start "${GPUSERVE_MODELS:-/models}" "$@"
