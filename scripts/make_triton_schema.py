"""Writes gpuserve/triton_schema.py: the field types of Triton's ModelConfig, read from the descriptor of a
model_config_pb2 module compiled from Triton's model_config.proto (triton-inference-server/common,
protobuf/model_config.proto). gpuserve's facade imports no protobuf, so the types travel as plain data.

    python -m grpc_tools.protoc -I DIR --python_out=OUT DIR/model_config.proto
    PYTHONPATH=OUT python scripts/make_triton_schema.py > gpuserve/triton_schema.py
"""

from __future__ import annotations

import pprint

from google.protobuf.descriptor import FieldDescriptor as F

import model_config_pb2

HEADER = '''"""The field types of Triton's ModelConfig (model_config.proto), as plain data for the facade, which
imports no protobuf: gpuserve/triton_schema_check.py reads configs against it. Written by
scripts/make_triton_schema.py from triton-inference-server/common's protobuf/model_config.proto; run it again
rather than editing this file.

MESSAGES: message name -> field name -> ("one" | "repeated", kind) or ("map", key kind, value kind), a kind
being a scalar name (str, bool, float, i32, i64, u32, u64), ("enum", enum name) or ("msg", message name).
"""
'''

KINDS = {F.TYPE_STRING: "str", F.TYPE_BYTES: "str", F.TYPE_BOOL: "bool", F.TYPE_FLOAT: "float",
         F.TYPE_DOUBLE: "float", F.TYPE_INT32: "i32", F.TYPE_SINT32: "i32", F.TYPE_SFIXED32: "i32",
         F.TYPE_INT64: "i64", F.TYPE_SINT64: "i64", F.TYPE_SFIXED64: "i64", F.TYPE_UINT32: "u32",
         F.TYPE_FIXED32: "u32", F.TYPE_UINT64: "u64", F.TYPE_FIXED64: "u64"}


def main() -> None:
    enums, messages = {}, {}

    def kind(field):
        if field.type == F.TYPE_ENUM:
            enums[field.enum_type.full_name] = tuple(value.name for value in field.enum_type.values)
            return ("enum", field.enum_type.full_name)
        if field.type == F.TYPE_MESSAGE:
            message(field.message_type)
            return ("msg", field.message_type.full_name)
        return KINDS[field.type]

    def message(descriptor):
        if descriptor.full_name in messages:
            return
        messages[descriptor.full_name] = None  # recursion guard
        fields = {}
        for field in descriptor.fields:
            if field.type == F.TYPE_MESSAGE and field.message_type.GetOptions().map_entry:
                entry = field.message_type
                fields[field.name] = ("map", kind(entry.fields_by_name["key"]), kind(entry.fields_by_name["value"]))
            else:
                fields[field.name] = ("repeated" if field.is_repeated else "one", kind(field))
        messages[descriptor.full_name] = fields

    message(model_config_pb2.ModelConfig.DESCRIPTOR)
    print(HEADER)
    print("ROOT = " + repr(model_config_pb2.ModelConfig.DESCRIPTOR.full_name))
    print("ENUMS = " + pprint.pformat(enums, width=116, compact=True))
    print("MESSAGES = " + pprint.pformat(messages, width=116, compact=True))


if __name__ == "__main__":
    main()
