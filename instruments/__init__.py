"""Real instruments: transports, drivers (each an instrument kind), board files, ``RealBoard``.

Layout: ``roles`` (the role protocols), ``kinds`` (the instrument-kind registry,
entry-point group ``hwloop.instruments``), one module per driver (``serial_board``,
``keithley2600``, ``keithley2400``, ``daq6510``, ``keithley707b``) over ``transport``
(serial) or ``visa_transport``; ``board_file`` (validation), ``board_open`` (opening
instruments), ``board_faults`` (events, faults, safe state) and ``real_board`` (the
Device methods and the ``board`` backend factory).
Imports ``hwloop`` only; never ``simulated_device`` or ``protocols``.
"""
