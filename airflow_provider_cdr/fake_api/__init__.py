"""A local stand-in for the CDR API v2, for the demo, the tests and the benchmarks."""
