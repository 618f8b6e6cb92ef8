"""Tools built on the compiler: the demo (demo), the HTML report (report, with its graph layout in layout) and
the differential fuzzer (fuzz)."""
