"""Frames packed into the harness's stream words and back: element j of a stream word sits at bits
[j*b, (j+1)*b), as FINN's npy_to_rtlsim_input and rtlsim_output_to_npy (reverse_inner=True) have
it; words travel as little-endian uint32."""
from __future__ import annotations

import numpy as np

from hw_models.errors import SimulationError
from hw_models.rtlsim.build import IoStream, Simulator


def _n32(bits: int) -> int:
    return (bits + 31) // 32


def pack_words(values: np.ndarray, bits: int, width: int) -> np.ndarray:
    """uint32 words (rows of width/32) from integer elements (innermost axis: one stream word)."""
    v = np.asarray(values, dtype=np.int64)
    elems = v.shape[-1]
    rows = v.reshape(-1, elems) & ((1 << bits) - 1)
    bitmat = ((rows[:, :, None] >> np.arange(bits)) & 1).astype(np.uint8).reshape(len(rows), -1)
    pad = 32 * _n32(width) - bitmat.shape[1]
    bitmat = np.pad(bitmat, ((0, 0), (0, pad)))
    return np.packbits(bitmat, axis=1, bitorder="little").view("<u4")


def unpack_words(words: np.ndarray, bits: int, elems: int, signed: bool) -> np.ndarray:
    """Integer elements (rows of `elems`) from uint32 words packed as pack_words does."""
    w = np.ascontiguousarray(words, dtype="<u4")
    bitmat = np.unpackbits(w.view(np.uint8), axis=1, bitorder="little")[:, : bits * elems]
    bitmat = bitmat.reshape(len(w), elems, bits).astype(np.int64)
    vals = (bitmat << np.arange(bits)).sum(axis=2)
    if signed:
        vals = np.where(vals >= 1 << (bits - 1), vals - (1 << bits), vals)
    return vals


def _representable(x: np.ndarray, dt) -> bool:
    if dt.name == "BIPOLAR":
        return bool(np.isin(x, (-1.0, 1.0)).all())
    if dt.is_integer():
        return bool(((x >= dt.min()) & (x <= dt.max()) & (x == np.round(x))).all())
    return bool(np.vectorize(dt.allowed, otypes=[bool])(x).all())


def pack_stream(stream: IoStream, frames: np.ndarray) -> np.ndarray:
    """Stream words (rows of uint32) of one top input for frames given as one NHWC tensor per
    row."""
    from qonnx.core.datatype import DataType

    per_frame = int(np.prod(stream.shape[1:]))
    frames = np.asarray(frames, dtype=np.float64)
    if frames.ndim < 1 or frames.size % per_frame or frames.shape[0] * per_frame != frames.size:
        raise SimulationError(
            f"frames of shape {frames.shape} do not hold whole tensors {stream.tensor} of shape "
            f"{tuple(stream.shape[1:])} (one frame per row)"
        )
    dt = DataType[stream.dtype]
    if not _representable(frames, dt):
        raise SimulationError(
            f"input values of {stream.tensor} are not all representable as {dt.name} "
            f"(range {dt.min()}..{dt.max()}{', integers' if dt.is_integer() else ''})"
        )
    folded = frames.reshape([frames.shape[0]] + stream.folded[1:])
    if dt.name == "BIPOLAR":
        return pack_words((folded + 1) / 2, 1, stream.width)
    if dt.is_integer():
        return pack_words(folded, dt.bitwidth(), stream.width)
    return _finn_pack(folded, dt, stream.bits, stream.width)


def pack_frames(sim: Simulator, frames: np.ndarray) -> np.ndarray:
    """Stream words (rows of uint32) of the first top input (see pack_stream)."""
    return pack_stream(sim.inputs[0], frames)


def _finn_pack(folded: np.ndarray, dt, bits: int, width: int) -> np.ndarray:
    """FINN's own packing, for fixed-point inputs."""
    from finn.util.data_packing import npy_to_rtlsim_input

    ints = npy_to_rtlsim_input(folded, dt, bits)
    raw = b"".join(int(w).to_bytes(4 * _n32(width), "little") for w in ints)
    return np.frombuffer(raw, dtype="<u4").reshape(len(ints), _n32(width))


def unpack_stream(stream: IoStream, words: np.ndarray, n: int) -> np.ndarray:
    """Output tensors (one frame per row, NHWC) of one top output from its stream words."""
    from qonnx.core.datatype import DataType

    dt = DataType[stream.dtype]
    shape = [n] + stream.folded[1:]
    if dt.name == "BIPOLAR":
        arr = 2 * unpack_words(words, 1, stream.elems, False) - 1
    elif dt.is_integer():
        arr = unpack_words(words, dt.bitwidth(), stream.elems, dt.signed())
    else:
        from finn.util.data_packing import rtlsim_output_to_npy

        ints = [int.from_bytes(row.tobytes(), "little") for row in words]
        arr = rtlsim_output_to_npy(ints, None, dt, tuple(shape), stream.bits, dt.bitwidth())
    return np.asarray(arr, dtype=np.float32).reshape([n] + stream.shape[1:])


def random_frames(model, n: int, seed: int = 0, index: int = 0) -> np.ndarray:
    """n random frames valid for the datatype of a model's input `index` (one NHWC tensor per
    row)."""
    from qonnx.core.datatype import DataType

    name = model.graph.input[index].name
    dt = model.get_tensor_datatype(name)
    shape = (n, *model.get_tensor_shape(name)[1:])
    rng = np.random.default_rng(seed)
    if dt == DataType["BIPOLAR"]:
        return rng.choice([-1.0, 1.0], size=shape).astype(np.float32)
    if not dt.is_integer():
        raise SimulationError(f"random frames need an integer input type, not {dt.name}")
    return rng.integers(dt.min(), dt.max() + 1, size=shape).astype(np.float32)
