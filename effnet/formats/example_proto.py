"""tf.train.Example without TensorFlow: the messages of tensorflow/core/example/{example,feature}.proto,
built from their descriptor with protobuf alone.

The wire format is TensorFlow's (same field numbers and types), so TensorFlow, DALI and tfds read what these
classes write. The prepare workers encode and check records with them: importing TensorFlow for its
generated classes would cost each worker seconds of CPU and most of its memory (README, "Prepare"). A private
descriptor pool keeps
them apart from TensorFlow's own ``tensorflow.Example`` when both are loaded in one process.
"""
from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto


def _field(name: str, number: int, kind: int, label: int = _F.LABEL_OPTIONAL, message: str | None = None,
           oneof: int | None = None) -> dict:
    spec = {"name": name, "number": number, "type": kind, "label": label}
    if message:
        spec["type_name"] = f".tensorflow.{message}"
    if oneof is not None:
        spec["oneof_index"] = oneof
    return spec


def _file() -> descriptor_pb2.FileDescriptorProto:
    def lists(kind: int) -> list[dict]:
        return [_field("value", 1, kind, _F.LABEL_REPEATED)]  # proto3: numbers packed

    messages = {
        "BytesList": lists(_F.TYPE_BYTES),
        "FloatList": lists(_F.TYPE_FLOAT),
        "Int64List": lists(_F.TYPE_INT64),
        "Feature": [_field("bytes_list", 1, _F.TYPE_MESSAGE, message="BytesList", oneof=0),
                    _field("float_list", 2, _F.TYPE_MESSAGE, message="FloatList", oneof=0),
                    _field("int64_list", 3, _F.TYPE_MESSAGE, message="Int64List", oneof=0)],
        "Features": [_field("feature", 1, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, message="Features.FeatureEntry")],
        "Example": [_field("features", 1, _F.TYPE_MESSAGE, message="Features")],
    }
    proto = descriptor_pb2.FileDescriptorProto(name="effnet/tf_example.proto", package="tensorflow",
                                               syntax="proto3")
    for name, fields in messages.items():
        message = proto.message_type.add(name=name, field=fields)
        if name == "Feature":
            message.oneof_decl.add(name="kind")
        if name == "Features":  # map<string, Feature> feature = 1
            message.nested_type.add(name="FeatureEntry", options={"map_entry": True}, field=[
                _field("key", 1, _F.TYPE_STRING), _field("value", 2, _F.TYPE_MESSAGE, message="Feature")])
    return proto


_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_file())


def _message(name: str):
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"tensorflow.{name}"))


Example, Features, Feature = _message("Example"), _message("Features"), _message("Feature")
BytesList, Int64List, FloatList = _message("BytesList"), _message("Int64List"), _message("FloatList")
