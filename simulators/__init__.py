"""Terminal simulator: single operations, scenario files and timed load, from the terminal side."""

from simulators.load import LoadReport, run_load
from simulators.scenario import ScenarioResult, load_scenario, run_scenario
from simulators.terminal import (
    OPERATIONS,
    RESPONSE_CODES,
    CardBook,
    SimError,
    TerminalConnection,
    build_request,
    describe_exchange,
)

__all__ = [
    "OPERATIONS",
    "RESPONSE_CODES",
    "CardBook",
    "LoadReport",
    "ScenarioResult",
    "SimError",
    "TerminalConnection",
    "build_request",
    "describe_exchange",
    "load_scenario",
    "run_load",
    "run_scenario",
]
