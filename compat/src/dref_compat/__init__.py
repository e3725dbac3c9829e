"""dref-compat: golden vectors, backend conformance suite, history checker."""
