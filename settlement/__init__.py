"""Settlement and clearing: business day, clearing files, net positions (not built yet).

The journal in ``authsrv.store`` records every transfer with its store, terminal, STAN, RRN and
approval code, which is what the clearing files will be derived from.
"""
