"""The EP protocols, above the Device contract.

Step plans and their engine, estimators, local updates, optimisers, conductance
programming, training, datasets, the replay device, session safety (Ctrl-C, safe
state) and the ``train``/``evaluate``/``resume``/``replay``/``gradcheck``/``plan``/
``sweep``/``characterize`` commands. Boards are reached only through
:mod:`hwloop.device` and the ``hwloop.backends`` entry points; imports ``hwloop`` only.
"""
