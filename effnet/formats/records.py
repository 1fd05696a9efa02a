"""The shard format shared by the prepare stage (writer) and every reader.

A prepared directory holds ``train-*`` / ``validation-*`` TFRecord shards of tf.train.Example
records and a ``manifest.json`` (per-shard counts, bytes, sha256; classes; label offset).
Keys follow Google's ImageNet converter: ``image/encoded`` (JPEG), ``image/format``,
``image/class/label`` (int64, 1-based: class index + ``LABEL_OFFSET``), ``image/class/text``,
``image/class/synset``, ``image/height``, ``image/width``, ``image/filename``,
``image/colorspace``, ``image/channels``. Readers subtract the manifest's ``label_offset``
(0 for existing 0-based shards).
"""
from __future__ import annotations

from pathlib import Path

from google.protobuf.message import DecodeError

from effnet.core import jsonfile, layout
from effnet.core.errors import UserError
from effnet.formats import example_proto
from effnet.formats.images import check_image

FORMAT = "effnet-tfrecords/1"
LABEL_OFFSET = 1
SPLITS = ("train", "validation")


def load_manifest(data_dir: str | Path) -> dict:
    """The manifest of a prepared directory; UserError naming the file when it is missing or unreadable."""
    return jsonfile.read(Path(data_dir) / layout.RECORDS_MANIFEST,
                         "manifest not found (run `python -m effnet prepare` first)")


def encode_example(jpeg: bytes, height: int, width: int, label: int, class_id: str, class_name: str,
                   filename: str) -> bytes:
    """A serialized tf.train.Example for one RGB JPEG of class index ``label`` (stored + LABEL_OFFSET)."""
    def b(v): return example_proto.Feature(bytes_list=example_proto.BytesList(value=[v]))
    def i(v): return example_proto.Feature(int64_list=example_proto.Int64List(value=[v]))

    return example_proto.Example(features=example_proto.Features(feature={
        "image/encoded": b(jpeg), "image/format": b(b"JPEG"), "image/colorspace": b(b"RGB"),
        "image/channels": i(3), "image/height": i(height), "image/width": i(width),
        "image/class/label": i(label + LABEL_OFFSET), "image/class/text": b(class_name.encode()),
        "image/class/synset": b(class_id.encode()), "image/filename": b(filename.encode()),
    })).SerializeToString()


def check_example(data: bytes, where: str):
    """Parse a record as an Example with a label and a decodable image; UserError naming ``where`` otherwise."""
    try:
        feature = example_proto.Example.FromString(data).features.feature
    except DecodeError as exc:
        raise UserError(f"{where}: not a tf.train.Example: {exc}") from None
    for key in ("image/encoded", "image/class/label"):
        if key not in feature:
            raise UserError(f"{where}: missing key {key!r}")
    check_image(feature["image/encoded"].bytes_list.value[0], where)
    return feature
