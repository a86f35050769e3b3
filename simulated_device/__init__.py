"""The numerical emulator of resistive-network boards and its SPICE-subset netlist tools."""
