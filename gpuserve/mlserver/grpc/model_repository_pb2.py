"""`mlserver.grpc.model_repository_pb2`: messages of MLServer's `inference.model_repository` package.

Built from a descriptor here rather than generated, in a private pool (MLServer, if also installed,
registers the same names in the default one). Field numbers are MLServer's and equal Triton's
repository messages without their `parameters`, so gpuserve's server reads both with one set of handlers.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

PACKAGE = "inference.model_repository"
SERVICE = f"{PACKAGE}.ModelRepositoryService"

# message -> [(field, number, type)]
_STRING, _BOOL, _MESSAGE = (descriptor_pb2.FieldDescriptorProto.TYPE_STRING, descriptor_pb2.FieldDescriptorProto.TYPE_BOOL,
                            descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE)
_MESSAGES = {
    "RepositoryIndexRequest": [("repository_name", 1, _STRING), ("ready", 2, _BOOL)],
    "RepositoryIndexResponse": [("models", 1, _MESSAGE)],  # repeated ModelIndex
    "RepositoryModelLoadRequest": [("repository_name", 1, _STRING), ("model_name", 2, _STRING)],
    "RepositoryModelLoadResponse": [],
    "RepositoryModelUnloadRequest": [("repository_name", 1, _STRING), ("model_name", 2, _STRING)],
    "RepositoryModelUnloadResponse": [],
}
_MODEL_INDEX = [("name", 1), ("version", 2), ("state", 3), ("reason", 4)]
METHODS = [("RepositoryIndex", "RepositoryIndexRequest", "RepositoryIndexResponse"),
           ("RepositoryModelLoad", "RepositoryModelLoadRequest", "RepositoryModelLoadResponse"),
           ("RepositoryModelUnload", "RepositoryModelUnloadRequest", "RepositoryModelUnloadResponse")]


def _file() -> descriptor_pb2.FileDescriptorProto:
    F = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="gpuserve/mlserver/model_repository.proto", package=PACKAGE,
                                              syntax="proto3")
    for name, fields in _MESSAGES.items():
        message = file.message_type.add(name=name)
        for field, number, kind in fields:
            if kind == _MESSAGE:
                message.field.add(name=field, number=number, type=kind, label=F.LABEL_REPEATED,
                                  type_name=f".{PACKAGE}.{name}.ModelIndex")
            else:
                message.field.add(name=field, number=number, type=kind, label=F.LABEL_OPTIONAL)
        if name == "RepositoryIndexResponse":
            index = message.nested_type.add(name="ModelIndex")
            for field, number in _MODEL_INDEX:
                index.field.add(name=field, number=number, type=_STRING, label=F.LABEL_OPTIONAL)
    service = file.service.add(name="ModelRepositoryService")
    for method, request, response in METHODS:
        service.method.add(name=method, input_type=f".{PACKAGE}.{request}", output_type=f".{PACKAGE}.{response}")
    return file


POOL = descriptor_pool.DescriptorPool()
DESCRIPTOR = POOL.Add(_file())
for _name in _MESSAGES:
    globals()[_name] = message_factory.GetMessageClass(POOL.FindMessageTypeByName(f"{PACKAGE}.{_name}"))

__all__ = ["DESCRIPTOR", "PACKAGE", "SERVICE", "METHODS", *_MESSAGES]
