"""Load generation and reports: ``authsrv bench`` (issue 4, "Hot path at full speed").

One run provisions a bench store (or reuses one), starts ``authsrv serve`` on it (or targets a
running host with ``--port``), drives it closed loop (N terminals, one request each at a time)
or open loop (a constant or Poisson rate, latency from the intended send time), optionally
drives an echo server with the same client code, and reports rates, HdrHistogram latency
percentiles, response codes, errors, time-outs and CPU per request of the host, the echo
server, the generator and the rest of the machine.

- ``provision``: deterministic card numbers (in memory only) and the bulk loader;
- ``wire``: pre-encoded request templates patched in place; a bitmap walk for fields 11, 39;
- ``generator``: one generator process (trio, one task per terminal connection);
- ``clients``: forks the generator processes, progress, CPU samples, merged results;
- ``security``: the terminals' security profile and keys (``--security``), and the terminal
  side in the generator: key changes, requests MACed in place, DUKPT counters, PIN blocks;
- ``host``: the host and echo subprocesses, CPU time from ``/proc``;
- ``echo``: the echo server (``python -m bench.echo``);
- ``report``: the report dictionary (``--json``), its text, the SLO and the warnings;
- ``commands``: the ``authsrv bench`` command line.
"""

from bench.commands import add_bench_parser, cmd_bench

__all__ = ["add_bench_parser", "cmd_bench"]
