"""PYNQ driver of a densiflow accelerator (FINN's IODMA shell); runs on the board.

Copied unchanged into a deployment folder's driver/ next to FINN's settings.json (written by
FINN's MakePYNQDriver: the I/O datatypes, normal/folded/packed shapes, DMA names, platform and
clock). Needs numpy and pynq only. The interface is FINN's (its former driver_base, and
finn-plus-driver's FINNDMAOverlay): `FINNExampleOverlay(bitfile_name, platform, io_shape_dict,
batch_size=1, fclk_mhz=100.0, ...)`, a settable `batch_size`, `execute(frames) -> outputs`.

Packing is FINN's `finnpy_to_packed_bytearray(reverse_inner=True, reverse_endian=True)`: element
0 of a folded word in the lowest bits, two's complement, each word padded to whole bytes, bytes
little-endian. On the board:

    python driver.py --bitfile ../bitfile/finn-accel.bit --inputfile ../io/input.npy \
        --outputfile output.npy [--expected ../io/expected_output.npy]
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
from pynq import Overlay, allocate

HERE = Path(__file__).resolve().parent
SETTINGS = json.loads((HERE / "settings.json").read_text())["driver_information"]
io_shape_dict = SETTINGS["io_shape_dict"]
_DTYPE = re.compile(r"(?:DataType\[')?(UINT|INT|BINARY|BIPOLAR)(\d*)(?:'\])?")


def parse_dtype(name: str) -> tuple[int, bool, bool]:
    """(bits, signed, bipolar) of a FINN integer datatype name, e.g. "DataType['INT4']"."""
    m = _DTYPE.fullmatch(name.strip())
    if m is None or (m.group(1) in ("UINT", "INT") and not m.group(2)):
        raise ValueError(f"datatype {name!r}: the driver packs FINN integer datatypes only")
    if m.group(1) in ("BINARY", "BIPOLAR"):
        return 1, False, m.group(1) == "BIPOLAR"
    return int(m.group(2)), m.group(1) == "INT", False


def pack(folded: np.ndarray, dtype: str) -> np.ndarray:
    """Folded integers (..., elems) -> bytes (..., ceil(elems * bits / 8)), as the IODMA reads."""
    bits, _, bipolar = parse_dtype(dtype)
    v = np.rint(np.asarray(folded, dtype=np.float64)).astype(np.int64)
    if bipolar:
        v = (v + 1) // 2
    planes = (v[..., None] & ((1 << bits) - 1)) >> np.arange(bits) & 1  # (..., elems, bits)
    flat = planes.reshape(*v.shape[:-1], v.shape[-1] * bits).astype(np.uint8)
    pad = [(0, 0)] * (flat.ndim - 1) + [(0, -flat.shape[-1] % 8)]
    return np.packbits(np.pad(flat, pad), axis=-1, bitorder="little")


def unpack(packed: np.ndarray, dtype: str, folded_shape: tuple[int, ...]) -> np.ndarray:
    """Bytes as FINN's IODMA writes them -> folded values (float32, as FINN returns them)."""
    bits, signed, bipolar = parse_dtype(dtype)
    elems = folded_shape[-1]
    flat = np.unpackbits(np.asarray(packed, dtype=np.uint8), axis=-1, bitorder="little")
    planes = flat[..., : elems * bits].reshape(*flat.shape[:-1], elems, bits).astype(np.int64)
    v = (planes << np.arange(bits)).sum(axis=-1)
    if signed:
        v = np.where(v >= 1 << (bits - 1), v - (1 << bits), v)
    if bipolar:
        v = 2 * v - 1
    return v.reshape(folded_shape).astype(np.float32)


def _batch(shape: list[int], n: int) -> tuple[int, ...]:
    return (n, *(int(x) for x in shape[1:]))


class FINNExampleOverlay(Overlay):
    """The accelerator: frames in, outputs out, through FINN's IODMAs (one input, one output)."""

    def __init__(self, bitfile_name, platform, io_shape_dict, batch_size=1, fclk_mhz=100.0,
                 device=None, download=True, runtime_weight_dir="runtime_weights/",
                 timeout_s=10.0):
        super().__init__(bitfile_name, download=download, device=device)
        if len(io_shape_dict["idma_names"]) != 1 or len(io_shape_dict["odma_names"]) != 1:
            raise ValueError("this driver serves accelerators with one input and one output")
        if platform not in ("zynq-iodma", "alveo"):
            raise ValueError(f"platform {platform!r}: use 'zynq-iodma' or 'alveo'")
        self.platform, self.io_shape_dict, self.timeout_s = platform, io_shape_dict, timeout_s
        self.fclk_mhz = fclk_mhz  # FINN's shell sets its clock in hardware (clocking wizard)
        self.runtime_weight_dir = runtime_weight_dir  # densiflow builds keep weights on chip
        self.idma = getattr(self, io_shape_dict["idma_names"][0])
        self.odma = getattr(self, io_shape_dict["odma_names"][0])
        self.ibuf = self.obuf = None
        self.batch_size = batch_size

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @batch_size.setter
    def batch_size(self, n: int) -> None:
        """Frames per execute(); (re)allocates the DMA buffers."""
        d = self.io_shape_dict
        cacheable = self.platform == "zynq-iodma"
        self._batch_size = int(n)
        self.ibuf = allocate(shape=_batch(d["ishape_packed"][0], n), dtype=np.uint8,
                             cacheable=cacheable)
        self.obuf = allocate(shape=_batch(d["oshape_packed"][0], n), dtype=np.uint8,
                             cacheable=cacheable)

    def execute(self, frames: np.ndarray) -> np.ndarray:
        """Outputs (batch, *oshape_normal[1:]) of frames (batch, *ishape_normal[1:])."""
        d, n = self.io_shape_dict, self.batch_size
        frames = np.asarray(frames)
        if frames.shape != _batch(d["ishape_normal"][0], n):
            raise ValueError(f"frames of shape {frames.shape}, expected "
                             f"{_batch(d['ishape_normal'][0], n)} (set batch_size first)")
        self.ibuf[:] = pack(frames.reshape(_batch(d["ishape_folded"][0], n)), d["idt"][0])
        self.ibuf.flush()
        self.execute_on_buffers()
        self.obuf.invalidate()
        out = unpack(np.array(self.obuf), d["odt"][0], _batch(d["oshape_folded"][0], n))
        return out.reshape(_batch(d["oshape_normal"][0], n))

    def execute_on_buffers(self) -> None:
        """Run the DMAs over the buffers, blocking; TimeoutError after timeout_s."""
        n = self.batch_size
        if self.platform == "alveo":
            self.idma.start(self.ibuf, n)
            self.odma.start(self.obuf, n).wait()
            return
        if not self.odma.read(0x00) & 0x4:
            raise RuntimeError("the output DMA is not idle")
        for dma, buf in ((self.odma, self.obuf), (self.idma, self.ibuf)):  # output first
            dma.write(0x10, buf.device_address & 0xFFFFFFFF)
            dma.write(0x14, (buf.device_address >> 32) & 0xFFFFFFFF)
            dma.write(0x1C, n)
            dma.write(0x00, 1)
        deadline = time.monotonic() + self.timeout_s
        while not self.odma.read(0x00) & 0x2:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the accelerator did not finish {n} frames in "
                                   f"{self.timeout_s} s")


def main(argv: list[str] | None = None) -> int:
    """Run the test vectors through the accelerator; exit status 1 on any mismatching value."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bitfile", default=str(HERE.parent / "bitfile" / "finn-accel.bit"))
    ap.add_argument("--inputfile", default=str(HERE.parent / "io" / "input.npy"))
    ap.add_argument("--outputfile", default="output.npy")
    ap.add_argument("--expected", default=None, help="expected outputs (.npy) to compare with")
    args = ap.parse_args(argv)
    frames = np.load(args.inputfile)
    accel = FINNExampleOverlay(args.bitfile, SETTINGS["platform"], io_shape_dict,
                               batch_size=len(frames), fclk_mhz=SETTINGS.get("fclk_mhz", 100.0))
    start = time.perf_counter()
    out = accel.execute(frames)
    seconds = time.perf_counter() - start
    np.save(args.outputfile, out)
    print(f"{len(frames)} frames in {seconds:.4f} s ({len(frames) / seconds:.1f} frames/s)")
    if args.expected is None:
        return 0
    bad = int(np.count_nonzero(out != np.load(args.expected)))
    print(f"{bad} of {out.size} output values differ from {args.expected}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
