"""Tools built on the compiler: the differential fuzzer (fuzz)."""
