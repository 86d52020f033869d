"""`kserve.constants.constants`: the names KServe scripts import, with KServe's values (so a script
that reads, say, `DEFAULT_HTTP_PORT` or `PredictorProtocol.REST_V2` behaves as before)."""

import enum
import os

KSERVE_LOGLEVEL = os.environ.get("KSERVE_LOGLEVEL", os.environ.get("GPUSERVE_LOG_LEVEL", "INFO")).upper()
KSERVE_MODEL_SERVER_NAME = "gpuserve"

KSERVE_GROUP = "serving.kserve.io"
KSERVE_KIND_INFERENCESERVICE = "InferenceService"
KSERVE_PLURAL_INFERENCESERVICE = "inferenceservices"
KSERVE_V1BETA1_VERSION = "v1beta1"
KSERVE_V1ALPHA1_VERSION = "v1alpha1"
KSERVE_V1BETA1 = f"{KSERVE_GROUP}/{KSERVE_V1BETA1_VERSION}"
KSERVE_V1ALPHA1 = f"{KSERVE_GROUP}/{KSERVE_V1ALPHA1_VERSION}"

DEFAULT_HTTP_PORT = 8080
DEFAULT_GRPC_PORT = 8081
MAX_GRPC_MESSAGE_LENGTH = 8 * 1024 * 1024  # KServe's default for --grpc_max_{send,receive}_message_length
V1_ROUTE_PREFIX = "/v1"
V2_ROUTE_PREFIX = "/v2"
INFERENCE_CONTENT_LENGTH_HEADER = "inference-header-content-length"  # the binary tensor extension's header
EXPLAINER_BASE_URL_FORMAT = "{0}://{1}"

# V2 datatype -> the InferTensorContents field that carries it over gRPC
GRPC_CONTENT_DATATYPE_MAPPINGS = {
    "BOOL": "bool_contents",
    **{t: "int_contents" for t in ("INT8", "INT16", "INT32")},
    "INT64": "int64_contents",
    **{t: "uint_contents" for t in ("UINT8", "UINT16", "UINT32")},
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


class PredictorProtocol(enum.Enum):
    REST_V1 = "v1"
    REST_V2 = "v2"
    GRPC_V2 = "grpc-v2"


class ModelType(enum.Enum):
    EXPLAINER = 1
    PREDICTOR = 2
