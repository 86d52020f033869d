"""One ONNX Runtime session the way every server in the comparison gets it (imported by the peer
server scripts inside their own venvs): intra_op_num_threads=2, inter_op 1, spinning off (gpuserve's
default; PEER_ORT_SPIN=1 turns spinning on), full graph optimisation, CPU provider."""

import os

import onnxruntime as ort


def session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(os.environ.get("PEER_ORT_THREADS", "2"))
    options.inter_op_num_threads = 1
    spin = os.environ.get("PEER_ORT_SPIN", "0")
    options.add_session_config_entry("session.intra_op.allow_spinning", spin)
    options.add_session_config_entry("session.inter_op.allow_spinning", spin)
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
