"""Load generation and reports (``authsrv bench``); the closed-loop timing of the simulator
(``simulators.load``) is what exists today."""
