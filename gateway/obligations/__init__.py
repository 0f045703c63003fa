"""Obligations (spec 18): what each institution owes, by when, and where it stands.

``rules`` turns the catalogue, the registry and the calendar into expected obligations and deadlines;
``status`` matches them with what arrived (pure functions over plain values); ``facts`` reads what
arrived through one small protocol (the SQLite ledger and the history today); ``report``, ``command``
and ``gauges`` show the result to operators, spreadsheets and Prometheus.
"""
