"""Real boards: the ``board`` backend.

VISA and serial transports, instrument drivers, board files and
:class:`~instruments.real_board.RealBoard`. Imports ``hwloop`` only; never
``simulated_device`` or ``protocols``.
"""
