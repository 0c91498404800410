"""A deployment's board driver: FINN's settings.json (MakePYNQDriver) and densiflow's driver.py.

finn-plus 1.6.1's MakePYNQDriver writes only settings.json (I/O datatypes and shapes, DMA names,
platform, clock): its driver code moved to the separate finn-plus-driver package. densiflow ships
its own driver (board_driver/driver.py: numpy and pynq, FINN's interface and packing) beside it.
MakePYNQDriver needs the model of the board shell (IODMAs in their own partitions); without
Vivado, `shell_model` makes it with the same transformations ZynqBuild starts with.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from hw_models.boards import Board

BOARD_DRIVER = Path(__file__).with_name("board_driver") / "driver.py"
ALVEO_IODMA_WIDTH = 512  # FINN's DataflowBuildConfig.vitis_iodma_intf_max_width default


def platform(board: Board) -> str:
    """FINN's driver platform of a board: "zynq-iodma" or "alveo"."""
    return "zynq-iodma" if board.shell_flow == "vivado_zynq" else "alveo"


def _name_dmas(model) -> None:
    """Instance names idma<i> / odma<i> on the input / output partitions, as MakeZYNQProject."""
    from qonnx.custom_op.registry import getCustomOp

    counts = {"idma": 0, "odma": 0}
    for node in model.get_nodes_by_op_type("StreamingDataflowPartition"):
        producer = model.find_producer(node.input[0]) if node.input else None
        kind = "idma" if producer is None else "odma" if not model.find_consumers(
            node.output[0]) else None
        if kind is not None:
            getCustomOp(node).set_nodeattr("instance_name", f"{kind}{counts[kind]}")
            counts[kind] += 1


def _each(model, transforms: list):
    """Apply each transformation, then FINN's node and tensor renaming, as ZynqBuild does."""
    from qonnx.transformation.general import GiveReadableTensorNames, GiveUniqueNodeNames

    for t in transforms:
        model = model.transform(t)
        model = model.transform(GiveUniqueNodeNames())
        model = model.transform(GiveReadableTensorNames())
    return model


def insert_iodmas(model, board: Board):
    """IODMAs at the model's input and output, width converters, specialised (no tool runs)."""
    from finn.transformation.fpgadataflow.insert_dwc import InsertDWC
    from finn.transformation.fpgadataflow.insert_iodma import InsertIODMA
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers
    from finn.util.basic import pynq_native_port_width

    width = (pynq_native_port_width[board.finn_board] if board.shell_flow == "vivado_zynq"
             else ALVEO_IODMA_WIDTH)
    return _each(model, [InsertIODMA(width), InsertDWC(), SpecializeLayers(board.part)])


def partition_shell(model, partition_dir: Path):
    """Each IODMA and the accelerator in its own partition; DMAs named as MakeZYNQProject."""
    from finn.transformation.fpgadataflow.create_dataflow_partition import CreateDataflowPartition
    from finn.transformation.fpgadataflow.floorplan import Floorplan

    model = _each(model, [Floorplan(),
                          CreateDataflowPartition(partition_model_dir=str(partition_dir))])
    _name_dmas(model)
    return model


def shell_model(model, board: Board, partition_dir: Path):
    """The folded dataflow model as ZynqBuild (or the Vitis flow) partitions it, no tool runs.

    Its first transformations: InsertIODMA, InsertDWC, SpecializeLayers, Floorplan,
    CreateDataflowPartition. Needs FINN's settings.
    """
    return partition_shell(insert_iodmas(model, board), partition_dir)


def make_driver(shell, board: Board, clock_mhz: float, driver_dir: Path) -> list[Path]:
    """FINN's settings.json for `shell` (a partitioned model with IODMAs) and driver.py."""
    from finn.transformation.fpgadataflow.make_driver import MakePYNQDriver

    shell = shell.transform(MakePYNQDriver(platform(board), "FINNDMAOverlay",
                                           clk_period_ns=1000.0 / clock_mhz))
    driver_dir.mkdir(parents=True, exist_ok=True)
    settings = Path(shell.get_metadata_prop("pynq_driver_dir")) / "settings.json"
    return [Path(shutil.copyfile(settings, driver_dir / "settings.json")),
            Path(shutil.copyfile(BOARD_DRIVER, driver_dir / "driver.py"))]
