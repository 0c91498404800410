"""Hardware-in-the-loop client: stream a test split to a board agent and check every output word.

The agent (hw_models/agent.py; the protocol is in its docstring) serves the accelerator on a PYNQ
board, or the run's Verilator simulation on this machine. Both sides authenticate (the agent
proves it holds the token with a MAC over this side's nonce, before anything it says is used),
this side checks that the agent serves the run's bitfile or simulator (the SHA-256 of this
side's own copy), sends the frames in batches, compares
every returned word with FINN's python execution and keeps a journal (one fsync'd line per
verified batch) so that after the agent or the client is killed mid-batch, running again
finishes with no batch lost or counted twice."""

from __future__ import annotations

import hashlib
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from flow.hil.connection import AgentConnection
from flow.hil.journal import Journal, check_journal
from flow.hil.types import (
    BatchRecord,
    BatchTiming,
    Estimate,
    Golden,
    HilError,
    HilEvent,
    HilOptions,
    HilResult,
    JournalHeader,
    Mismatch,
)
from flow.ml.agreement import agrees
from hw_models.agent import Manifest


def verify_batch(start: int, got: np.ndarray, expected: np.ndarray,
                 show: int) -> tuple[int, list[Mismatch]]:
    """Count of words that differ and the first `show` of them (frame, index, expected, got)."""
    n = got.shape[0]
    g = got.reshape(n, -1).astype(np.float64)
    e = expected.reshape(n, -1).astype(np.float64)
    bad = np.argwhere(g != e)
    first = [Mismatch(frame=start + int(f), index=int(i), expected=float(e[f, i]),
                      got=float(g[f, i])) for f, i in bad[:show]]
    return len(bad), first


def _frames(golden: Golden, m: Manifest) -> tuple[np.ndarray, np.ndarray]:
    """Inputs in the wire dtype and expected outputs, one frame per row, checked."""
    n = len(golden.inputs)
    in_frame, out_frame = m.in_shape[1:], m.out_shape[1:]
    inputs = np.asarray(golden.inputs)
    expected = np.asarray(golden.expected)
    if n < 1 or inputs.size != n * int(np.prod(in_frame)):
        raise HilError(f"golden inputs of shape {inputs.shape} are not frames of shape {in_frame}")
    if len(expected) != n or expected.size != n * int(np.prod(out_frame)):
        raise HilError(f"golden outputs of shape {expected.shape} are not {n} frames of shape "
                       f"{out_frame}")
    for name, extra in (("labels", golden.labels),
                        ("reference logits", golden.reference_logits)):
        if extra is not None and len(extra) != n:
            raise HilError(f"{len(extra)} {name} for {n} frames")
    wire = inputs.reshape((n, *in_frame)).astype(np.dtype(m.in_dtype))
    if not np.array_equal(wire.astype(np.float64), inputs.reshape(wire.shape)):
        raise HilError(f"golden inputs are not all representable as {m.in_dtype}, the "
                       "accelerator's input type")
    return wire, expected.reshape((n, *out_frame))


def _sha256(arr: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr, dtype=np.float64).tobytes()).hexdigest()


def _stream(conn: AgentConnection, journal: Journal, inputs: np.ndarray, expected: np.ndarray,
            options: HilOptions, emit: Callable[[HilEvent], None]) -> None:
    """Send every batch the journal lacks, verify it, record it."""
    n, bs = len(inputs), journal.header.batch_size
    for k, start in enumerate(range(0, n, bs)):
        if k in journal.records:
            continue
        stop = min(n, start + bs)
        t0 = time.perf_counter()
        conn.send_batch(k, inputs[start:stop])
        done = sum(r.frames for r in journal.records.values())
        emit(HilEvent(kind="sent", batch=k, frames_done=done, frames_total=n))
        out, head = conn.recv_result(k, stop - start)
        rtt = time.perf_counter() - t0
        count, first = verify_batch(start, out, expected[start:stop], options.show_mismatches)
        journal.append(BatchRecord(
            batch=k, start=start, frames=stop - start, mismatches=count, first_mismatches=first,
            predictions=out.reshape(stop - start, -1).argmax(1).tolist(), round_trip_s=rtt,
            device_s=head.seconds, cycles=head.cycles, out_sha256=head.sha256))
        emit(HilEvent(kind="verified", batch=k, frames_done=done + stop - start, frames_total=n))


def _probe_latency(conn: AgentConnection, inputs: np.ndarray, expected: np.ndarray, count: int,
                   emit: Callable[[HilEvent], None]) -> tuple[list[float], list[float], int]:
    """Round trips and backend times of one-frame requests (verified), and their mismatches."""
    rtts, devs, bad = [], [], 0
    for i in range(count):
        f = i % len(inputs)
        t0 = time.perf_counter()
        conn.send_batch(-1 - i, inputs[f:f + 1])
        out, head = conn.recv_result(-1 - i, 1)
        rtts.append(time.perf_counter() - t0)
        devs.append(head.seconds)
        bad += verify_batch(f, out, expected[f:f + 1], 0)[0]
        emit(HilEvent(kind="probe", batch=-1 - i, frames_done=len(inputs),
                      frames_total=len(inputs)))
    return rtts, devs, bad


def _check_artefact(conn: AgentConnection, artefacts: Mapping[str, str]) -> None:
    want = artefacts.get(conn.backend)
    if want is None:
        raise HilError(f"agent {conn.target} serves backend {conn.backend!r}; the run has "
                       f"artefacts for {', '.join(artefacts) or 'no backend'}")
    if conn.artefact != want:
        raise HilError(f"agent {conn.target} serves {conn.backend} artefact sha256 "
                       f"{conn.artefact[:16]}…, the run's is {want[:16]}…: deploy this run's "
                       "folder to the agent")


def run_hil(target: str, token: bytes, golden: Golden, artefacts: Mapping[str, str],
            journal: str | Path, options: HilOptions | None = None,
            estimates: Sequence[Estimate] = (),
            progress: Callable[[HilEvent], None] | None = None) -> HilResult:
    """Validate what an agent serves on the whole golden set, resuming from the journal.

    artefacts: the run's SHA-256 per backend (artefact_hashes of its deployment folder).
    Raises HilError when the validation cannot finish (connection, token, artefact, protocol,
    timeout); the journal keeps what was verified. Mismatching words do not raise: they are in
    the result (bit_exact False).
    """
    options = options or HilOptions()
    emit = progress or (lambda event: None)
    t0 = time.perf_counter()
    if not options.fresh:
        check_journal(journal)
    with AgentConnection(target, token, options.timeout_s) as conn:
        _check_artefact(conn, artefacts)
        inputs, expected = _frames(golden, conn.manifest)
        bs = options.batch_size or conn.manifest.max_frames
        if bs > conn.manifest.max_frames:
            raise HilError(f"batch size {bs} exceeds the agent's {conn.manifest.max_frames} "
                           "frames per request")
        header = JournalHeader(backend=conn.backend, artefact_sha256=conn.artefact,
                               frames=len(inputs), batch_size=bs, inputs_sha256=_sha256(inputs),
                               expected_sha256=_sha256(expected))
        with Journal(journal, header, options.fresh) as jr:
            resumed = len(jr.records)
            _stream(conn, jr, inputs, expected, options, emit)
            probes = _probe_latency(conn, inputs, expected, options.latency_probes, emit)
            records = [jr.records[k] for k in sorted(jr.records)]
    return _result(conn, golden, header, records, resumed, probes, list(estimates),
                   options.show_mismatches, time.perf_counter() - t0)


def _simulated(records: list[BatchRecord], clock_mhz: float | None) -> tuple[float | None, ...]:
    """(fps, latency µs) from the simulated cycles, when the agent simulates and a clock is set."""
    steady = [r.cycles.steady for r in records if r.cycles and r.cycles.steady]
    latency = [r.cycles.latency for r in records if r.cycles]
    if not clock_mhz or not latency:
        return None, None
    fps = clock_mhz * 1e6 / statistics.median(steady) if steady else None
    return fps, statistics.median(latency) / clock_mhz


def _result(conn: AgentConnection, golden: Golden, header: JournalHeader,
            records: list[BatchRecord], resumed: int, probes: tuple, estimates: list[Estimate],
            show: int, session_s: float) -> HilResult:
    rtts, devs, probe_bad = probes
    n = header.frames
    pred = np.array([p for r in records for p in r.predictions])
    mismatches = sum(r.mismatches for r in records)
    first = [m for r in records for m in r.first_mismatches][:show]
    sim_fps, sim_latency = _simulated(records, conn.manifest.clock_mhz)

    def fraction(hits: np.ndarray | None) -> float | None:
        return None if hits is None else float(np.mean(hits))

    return HilResult(
        target=conn.target, backend=conn.backend, artefact_sha256=conn.artefact, frames=n,
        batch_size=header.batch_size, batches=len(records), resumed_batches=resumed,
        output_words=n * int(np.prod(conn.manifest.out_shape[1:])), mismatches=mismatches,
        probe_mismatches=probe_bad, first_mismatches=first,
        bit_exact=mismatches == 0 and probe_bad == 0,
        accuracy=fraction(None if golden.labels is None
                          else pred == np.asarray(golden.labels).reshape(-1)),
        agreement_with_reference=fraction(None if golden.reference_logits is None
                                          else agrees(pred, golden.reference_logits)),
        wall_fps=n / sum(r.round_trip_s for r in records),
        device_fps=n / max(1e-12, sum(r.device_s for r in records)),
        latency_ms=1e3 * statistics.median(devs) if devs else None,
        round_trip_latency_ms=1e3 * statistics.median(rtts) if rtts else None,
        clock_mhz=conn.manifest.clock_mhz, simulated_fps=sim_fps, simulated_latency_us=sim_latency,
        estimates=estimates,
        batch_timings=[BatchTiming(batch=r.batch, frames=r.frames, round_trip_s=r.round_trip_s,
                                   device_s=r.device_s) for r in records],
        session_s=session_s)
