"""Round-trip times of the SCPI/TSP drivers over the loopback socket (virtual bench).

Run: python benchmarks/bench_scpi_loopback.py

Opens the virtual SCPI bench (simulated_device.virtual_scpi) on 127.0.0.1, connects
the drivers through pyvisa-py (TCPIP SOCKET) and prints the mean wall time of each
kind of exchange. The instruments answer at once, so these are host + socket costs
(a real instrument adds its conversion time: NPLC x readings).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import pyvisa

from instruments.daq6510 import DAQ6510
from instruments.keithley707b import Keithley707B, SwitchedCrosspoints
from instruments.keithley2600 import Keithley2600
from instruments.visa_transport import VisaTransport
from simulated_device.bench_network import BenchNetwork
from simulated_device.virtual_scpi import VirtualScpiBench


def timed(label: str, fn: Callable[[], object], n: int) -> None:
    fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    dt = (time.perf_counter() - t0) / n
    print(f"{label:<52s} {dt * 1e3:8.3f} ms")


def main() -> None:
    net = BenchNetwork({"arch": "16-8-4", "preset": "reram"}, np.random.default_rng(0))
    with VirtualScpiBench(net) as bench:
        rm = pyvisa.ResourceManager("@py")

        def connect(name: str) -> VisaTransport:
            return VisaTransport.open(bench.resources[name], resource_manager=rm, name=name)

        smu = Keithley2600(connect("smu"), bench.smu_channels, nplc=0.01)
        daq = DAQ6510(connect("daq"), bench.daq_channels, nplc=0.01)
        matrix = Keithley707B(connect("matrix"))
        xsmu = Keithley2600(connect("xsmu"), ("smua",), nplc=0.01)
        cross = SwitchedCrosspoints(matrix, xsmu.channel(0), bench.crosspoint_routes)
        n_in = len(net.desc.input_nodes)
        k = len(bench.daq_channels)
        v = np.linspace(-0.5, 0.5, n_in)
        print(f"virtual bench: {n_in} SMU inputs, {k} DAQ channels, {net.desc.n_edges} edges")
        timed("query round trip (*IDN?)", lambda: daq.transport.query("*IDN?"), 500)
        timed(
            f"set {n_in} input voltages (one write) + is_energised",
            lambda: (smu.set_voltages(np.arange(n_in), v), smu.is_energised()),
            200,
        )
        timed(f"DAQ read {k} channels x 1 sample", lambda: daq.read_voltages(np.arange(k), 1), 200)
        timed(
            f"DAQ read {k} channels x 10 samples", lambda: daq.read_voltages(np.arange(k), 10), 100
        )
        timed("SMU read 1 channel x 10 samples", lambda: smu.read_voltages(np.arange(1), 10), 200)
        timed(
            "crosspoint read (route, I/V, release)",
            lambda: cross.read_conductance(np.array([0]), 0.1),
            100,
        )
        timed(
            "crosspoint pulse x5 (route, pulse, release)", lambda: cross.pulse(1, 1.0, 1e-5, 5), 100
        )
        for d in (smu, daq, matrix, xsmu):
            d.close()
        rm.close()


if __name__ == "__main__":
    main()
