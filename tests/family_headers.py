"""Writing weight-file headers for tests: a .safetensors header with no data after it (detection reads
only the header), and small GGUF files through the gguf package's own writer."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from dreamshell.engines import family_layouts as layouts  # noqa: F401  (re-exported for the tests)


def header_only(path: Path, shapes: dict, metadata: dict | None = None, dtype: str = "F16") -> Path:
    """A safetensors header naming `shapes` (as float16, offsets as if the data followed) and nothing
    after it: a full-size layout in a few hundred kilobytes."""
    size = {"F16": 2, "BF16": 2, "F32": 4, "F8_E4M3": 1}[dtype]
    header, offset = {}, 0
    if metadata:
        header["__metadata__"] = metadata
    for key, shape in shapes.items():
        n = size
        for d in shape:
            n *= d
        header[key] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob)
    return path


def gguf_file(path: Path, shapes: dict, arch: str = "flux", big: tuple = ("img_in.weight",),
              quant: str = "Q4_0") -> Path:
    """A GGUF file with every named tensor: those in `big` at their real shape, quantised; the rest as
    one float32 value each (their names are what detection reads)."""
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFWriter
    from gguf.quants import quantize

    writer = GGUFWriter(str(path), arch)
    writer.add_uint32("test.version", 1)
    for key, shape in shapes.items():
        if key in big:
            data = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
            qt = GGMLQuantizationType[quant]
            writer.add_tensor(key, quantize(data, qt), raw_shape=quantize(data, qt).shape, raw_dtype=qt)
        else:
            writer.add_tensor(key, np.zeros((1,), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
